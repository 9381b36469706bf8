"""Metadata: the ``MetaStore`` interface (``store.py``) and its backends (``sqlite.py``: embedded)."""
