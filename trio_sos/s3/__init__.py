"""The S3 API: routing, operations, XML, errors. Calls ``meta`` and ``data`` through their interfaces, never SQL
or sockets."""
