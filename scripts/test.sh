#!/usr/bin/env bash
# The project's test command (see README), complete on a fresh Debian machine: installs what the tests need
# (scripts/install-test-deps.sh: the C toolchain, the sanitizer runtime, the S3 clients; scripts/fetch-cassandra.sh:
# Cassandra 5.0 from Maven Central), the project with its
# test extras (which builds the C agent), and runs the suite. `--asan` runs the agent tests against the
# AddressSanitizer/UBSan build of the agent instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
python -m pip install -q -e '.[test]'
if [ "${1:-}" = "--asan" ]; then
  make -C native asan >/dev/null
  export TRIO_SOS_AGENT_BIN="$PWD/native/build/trio-sos-agent-asan"
  # leaks at exit are not errors for a server killed by signal; everything else aborts the agent
  export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
  exec python -m pytest -q -p no:cacheprovider tests/agent
fi
# a real Apache Cassandra 5.0 for the Cassandra metadata tests: resolved from Maven Central once into a cache outside
# the clone (~/.cache/trio-sos); the tests start and stop their own node. In CI a failure here fails the run.
if ! TRIO_SOS_CASSANDRA_HOME="$(bash scripts/fetch-cassandra.sh)"; then
  if [ -n "${CI:-}" ]; then
    echo "test.sh: cannot fetch Cassandra (needed in CI)" >&2
    exit 1
  fi
  echo "test.sh: Cassandra not fetched: its tests are skipped" >&2
else
  export TRIO_SOS_CASSANDRA_HOME
fi
# the conventions (docs/development.md): ruff and mypy clean, or the test command fails
python -m ruff check .
python -m mypy trio_sos
exec python -m pytest -q -p no:cacheprovider tests
