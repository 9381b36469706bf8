#!/usr/bin/env bash
# The real S3 clients the tests drive (Debian packages and PyPI), installed when missing. Run as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in awscli s3cmd rclone docker-registry skopeo openssl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
python -m pip install -q minio
# An older boto3 (1.34.x: before default checksums and aws-chunked trailers), in a venv of its own so it does
# not replace the project's boto3.
OLD_BOTO=/opt/trio-sos-clients/boto3-1.34
if [ ! -x "$OLD_BOTO/bin/python" ] || ! "$OLD_BOTO/bin/python" -c "import boto3" 2>/dev/null; then
  python -m venv "$OLD_BOTO"
  "$OLD_BOTO/bin/pip" install -q "boto3==1.34.162"
fi
