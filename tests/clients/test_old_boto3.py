"""boto3 at an older 1.34.x release (no default checksums, no aws-chunked trailers), from its own venv."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .test_clients import need

PYTHON = "/opt/trio-sos-clients/boto3-1.34/bin/python"


def test_boto3_1_34(node) -> None:
    python = need(PYTHON)
    u = node.users[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    done = subprocess.run([python, str(Path(__file__).with_name("old_boto3_script.py")), node.endpoint,
                           u["access_key"], u["secret_key"]], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "old boto3 OK 1.34." in done.stdout
