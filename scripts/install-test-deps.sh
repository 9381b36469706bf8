#!/usr/bin/env bash
# Everything the test suite needs beyond the project's own Python packages, installed when missing (Debian
# bookworm, as root): the C toolchain and isa-l that build the agent, clang and its sanitizer runtime for the
# AddressSanitizer/UBSan build, openssl (test certificates), ZooKeeper (the tests start their own on loopback;
# the package starts no service), and the real S3 clients the tests drive (AWS CLI,
# s3cmd, rclone, the Docker registry and skopeo from Debian; Chromium and ChromeDriver for the dashboard test; boto3 1.34.x in a venv of its own). The MinIO SDK and
# the other PyPI pieces are the project's `test` extras. `scripts/test.sh` runs this first.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: not root; not installing Debian packages (tests of missing clients are skipped)" >&2
  exit 0
fi

need=()
for pkg in build-essential libisal-dev clang libclang-rt-14-dev openssl awscli s3cmd rclone docker-registry skopeo \
           chromium chromium-driver \
           zookeeper; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "install-test-deps: installing ${need[*]}" >&2
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# An older boto3 (1.34.x: before default checksums and aws-chunked trailers), in a venv of its own so it does
# not replace the project's boto3.
OLD_BOTO=/opt/trio-sos-clients/boto3-1.34
if [ ! -x "$OLD_BOTO/bin/python" ] || ! "$OLD_BOTO/bin/python" -c "import boto3" 2>/dev/null; then
  python -m venv "$OLD_BOTO"
  "$OLD_BOTO/bin/pip" install -q "boto3==1.34.162"
fi
