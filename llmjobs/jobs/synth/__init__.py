"""Data synthesis kinds: problem generators, teacher sampling with filters, multistage pipelines."""
