"""examples/local_cluster.py does what it says: a whole cluster on one machine, a working endpoint, and nothing
left running once it is stopped."""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import psutil
import pytest
from botocore.config import Config

from tests.procs import _free_port, zookeeper_installed

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "local_cluster.py"


@pytest.mark.parametrize("metadata", ["sqlite", "cassandra"])
def test_local_cluster_example(tmp_path, request, metadata) -> None:
    if not zookeeper_installed():
        pytest.skip("ZooKeeper is not installed (Debian package zookeeper)")
    extra = []
    if metadata == "cassandra":
        cassandra = request.getfixturevalue("cassandra")
        extra = ["--cassandra", cassandra.contact, "--keyspace", f"example_{_free_port()}"]
    # --port 0: each node on a port of its own choosing (a fixed pair could meet a port some other process took)
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), "--dir", str(tmp_path / "cluster"), "--port", "0", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        out = b""
        deadline = time.monotonic() + 120
        while b"^C stops everything" not in out:
            assert proc.poll() is None, out.decode(errors="replace")
            assert time.monotonic() < deadline, out.decode(errors="replace")
            ready, _, _ = select.select([proc.stdout], [], [], 1)
            if ready:
                out += proc.stdout.read1(65536)  # type: ignore[union-attr]
        text = out.decode()
        assert text.count("agent      ") == 3 and text.count("S3 node    ") == 2
        assert (text.count("metadata in Cassandra") == 2) == (metadata == "cassandra")
        access, secret = re.search(r"admin key pair: (\S+) (\S+)", text).groups()  # type: ignore[union-attr]
        endpoints = re.findall(r"S3 node    (\S+)", text)
        kids = psutil.Process(proc.pid).children(recursive=True)
        assert len([k for k in kids if "trio-sos-agent" in " ".join(k.cmdline())]) == 3
        clients = [boto3.client("s3", endpoint_url=e, region_name="us-east-1", aws_access_key_id=access,
                                aws_secret_access_key=secret, config=Config(s3={"addressing_style": "path"}))
                   for e in endpoints]
        admins = re.findall(r"S3 node    \S+  admin (\S+)", text)
        assert len(admins) == 2
        status = subprocess.run([sys.executable, "-m", "trio_sos", "admin", "--endpoint", admins[1], "--access-key",
                                 access, "--secret-key", secret, "--json", "status"], capture_output=True, text=True,
                                timeout=60)
        assert status.returncode == 0, status.stderr
        assert len(json.loads(status.stdout)["agents"]) == 3
        clients[0].create_bucket(Bucket="example")
        clients[0].put_object(Bucket="example", Key="k", Body=b"through the first node")
        assert clients[1].get_object(Bucket="example", Key="k")["Body"].read() == b"through the first node"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        gone, alive = psutil.wait_procs(kids, timeout=30)
        assert not alive, alive
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
