"""Data synthesis kinds: problem generators and teacher sampling that build training sets."""
