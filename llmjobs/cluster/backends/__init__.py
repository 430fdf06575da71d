"""One module per scheduler, all behind ``base.Backend``."""
