#!/usr/bin/env bash
# Resolves Apache Cassandra 5.0.9 (the jars of org.apache.cassandra:cassandra-all) from Maven Central once, into a
# cache outside the clone (TRIO_SOS_CASSANDRA_HOME, default ~/.cache/trio-sos/cassandra-5.0.9), and prints that
# directory. The tests start a throwaway node from it (tests/cassandra_server.py). Needs Java 17 and Maven; as
# root on Debian it installs them when missing.
set -euo pipefail
VERSION=5.0.9
HOME_DIR="${TRIO_SOS_CASSANDRA_HOME:-$HOME/.cache/trio-sos/cassandra-$VERSION}"
if [ -f "$HOME_DIR/lib/.complete" ]; then
  echo "$HOME_DIR"
  exit 0
fi
if ! command -v mvn >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
  else
    echo "fetch-cassandra: Java 17 and Maven are needed (apt-get install openjdk-17-jre-headless maven)" >&2
    exit 1
  fi
fi
mkdir -p "$HOME_DIR"
cat > "$HOME_DIR/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>trio-sos</groupId>
  <artifactId>cassandra-test-server</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$VERSION</version>
    </dependency>
  </dependencies>
</project>
POM
rm -rf "$HOME_DIR/lib"
(cd "$HOME_DIR" && mvn -B -q -Dstyle.color=never -Dmaven.repo.local="$HOME_DIR/m2" dependency:copy-dependencies \
   -DincludeScope=runtime -DoutputDirectory="$HOME_DIR/lib" >&2)
touch "$HOME_DIR/lib/.complete"
echo "$HOME_DIR"
