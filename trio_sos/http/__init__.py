"""HTTP/1.1 on Trio + h11: connection handling, limits, streamed bodies. Knows nothing of S3."""
