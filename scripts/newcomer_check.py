"""Do what a newcomer does, verbatim: a fresh clone, the README's set-up command in a fresh virtual environment,
run from the clone's root (and `serve` again from another directory), one S3 round trip with the credentials it
printed, and a clone left as clean as it was. `.ci/run` calls this; it needs root (the README's apt-get), network
access to the package registries, and boto3 in the Python that runs it (the test extras have it).

    python scripts/newcomer_check.py [--repo PATH]

Exits non-zero, saying which step failed and with the server's output, when anything a newcomer would hit fails.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

README_STEP = re.compile(r"## Set-up.*?```sh\n(?P<command>[^\n]+)\n```", re.DOTALL)
START_TIMEOUT = 900.0  # the set-up command installs packages and builds the agent before serving


def fail(message: str, output: str = "") -> None:
    print(f"newcomer check FAILED: {message}", file=sys.stderr)
    if output:
        print("--- output ---\n" + output[-8000:], file=sys.stderr)
    sys.exit(1)


def readme_command(clone: Path) -> str:
    match = README_STEP.search((clone / "README.md").read_text())
    if not match:
        fail("README.md has no ```sh block under '## Set-up'")
    command = match.group("command").strip()
    if "python -m trio_sos serve" not in command:
        fail(f"the README's set-up command does not start the server: {command!r}")
    return command


def run_until_serving(command: str, cwd: Path, env: dict[str, str]) -> tuple[subprocess.Popen, dict[str, str], str]:
    """Start ``command`` in bash (its own process group) and read its output until it prints the S3 endpoint."""
    proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    assert proc.stdout is not None
    output = ""
    found: dict[str, str] = {}
    deadline = time.monotonic() + START_TIMEOUT
    while "endpoint" not in found:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stop(proc)
            fail(f"`{command}` did not print its S3 endpoint within {START_TIMEOUT:.0f}s", output)
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if not ready:
            continue
        data = os.read(proc.stdout.fileno(), 65536)
        if not data:
            code = proc.wait()
            fail(f"`{command}` exited with code {code} before serving", output)
        output += data.decode(errors="replace")
        for name, pattern in (("access_key", r"access key: (\S+)"), ("secret_key", r"secret key: (\S+)"),
                              ("endpoint", r"S3 endpoint: (\S+)")):
            if name not in found and (m := re.search(pattern, output)):
                found[name] = m.group(1)
    return proc, found, output


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM the command's process group (bash and the server), as ^C in a terminal would stop it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def round_trip(endpoint: str, access_key: str, secret_key: str, output: str) -> None:
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=access_key,
                      aws_secret_access_key=secret_key,
                      config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))
    body = os.urandom(3 * 1024 * 1024 + 17)
    try:
        s3.create_bucket(Bucket="newcomer")
        s3.put_object(Bucket="newcomer", Key="hello.bin", Body=body)
        got = s3.get_object(Bucket="newcomer", Key="hello.bin")["Body"].read()
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket="newcomer").get("Contents", [])]
    except Exception as exc:  # any failure of the round trip is the finding
        fail(f"S3 round trip against {endpoint} failed: {exc!r}", output)
    if got != body or listed != ["hello.bin"]:
        fail(f"S3 round trip returned wrong data (listed {listed})", output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent),
                        help="the repository to clone (default: this checkout; its committed HEAD is cloned)")
    args = parser.parse_args()
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    with tempfile.TemporaryDirectory(prefix="trio-sos-newcomer-") as tmp:
        root = Path(tmp)
        clone = root / "clone"
        subprocess.run(["git", "clone", "-q", args.repo, str(clone)], check=True)
        command = readme_command(clone)
        venv = root / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # what `source venv/bin/activate` does: its python and pip come first on PATH
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "TRIO_SOS_AGENT_BIN")}
        env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}:{os.environ['PATH']}",
                   DEBIAN_FRONTEND="noninteractive")
        print(f"newcomer check: in a fresh clone and venv, running the README's set-up command: {command}")
        started = time.monotonic()
        proc, found, output = run_until_serving(command, clone, env)
        print(f"newcomer check: serving at {found['endpoint']} after {time.monotonic() - started:.0f}s")
        if "access_key" not in found or "secret_key" not in found:
            stop(proc)
            fail("the first start did not print an access key and a secret key", output)
        round_trip(found["endpoint"], found["access_key"], found["secret_key"], output)
        code = stop(proc)
        if code not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
            fail(f"serve exited with code {code} on SIGTERM", output)
        if "Traceback" in output:
            fail("serve printed a traceback", output)
        status = subprocess.run(["git", "status", "--porcelain", "--ignored=no"], cwd=clone, capture_output=True,
                                text=True, check=True).stdout
        if status.strip():
            fail(f"the set-up and a run left untracked or changed files in the clone:\n{status}")
        print("newcomer check: round trip OK from the clone's root; the clone is clean")

        # The installed package works from anywhere else, too: the serve part of the command, elsewhere.
        elsewhere = root / "elsewhere"
        elsewhere.mkdir()
        proc, found2, output2 = run_until_serving("python -m trio_sos serve", elsewhere, env)
        round_trip(found2["endpoint"], found2.get("access_key") or "", found2.get("secret_key") or "", output2)
        stop(proc)
        print("newcomer check: round trip OK from another directory")


if __name__ == "__main__":
    main()
