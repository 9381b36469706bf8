"""Object bodies: cutting them into chunks on the agents, reading them back, checksums, garbage collection.

Talks to agents only through ``trio_sos.agent`` pools and to metadata only through ``MetaStore``. Knows nothing of
HTTP or S3 XML.
"""
