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
