"""auth/ owns request authentication: pure functions plus a credentials lookup; no sockets, no metadata access.

- `sigv4`: AWS Signature Version 4 verification of S3 requests signed in the Authorization header
  (canonical request, string to sign, signing-key cache, S3-compatible error codes).
"""
