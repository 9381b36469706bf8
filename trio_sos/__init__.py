"""trio_sos: an S3-compatible object store — Trio + h11 nodes in Python, a storage agent in C."""

__version__ = "0.1.0"
