"""auth/ owns request authentication: pure functions plus a credentials lookup; no sockets, no metadata access.

- `sigv4`: AWS Signature Version 4 verification of S3 requests signed in the Authorization header and of presigned
  URLs (canonical request, string to sign, signing-key cache, S3-compatible error codes).
- `sigv2`: AWS Signature Version 2 (``Authorization: AWS key:signature`` and ``AWSAccessKeyId``/``Expires``/
  ``Signature`` presigned URLs).
- `chunked`: incremental, sans-IO decoding of aws-chunked (STREAMING-*) bodies: chunk and trailer signatures,
  trailing checksum headers.
"""
