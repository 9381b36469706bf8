"""Instructions a one-process node executes per request, counted by valgrind: a figure that does not move with the
machine's hour (the rates and CPU times of s3_bench.py do, up to 2x here), for A/B runs of per-request work.

    apt-get install -y valgrind
    python benchmarks/instructions.py                      # get, put, delete, head: this tree
    python benchmarks/instructions.py get --compare HEAD~1 # this tree against a commit (a git worktree of it)
    python benchmarks/instructions.py --requests 600       # more requests per run (default 300)
    python benchmarks/instructions.py --clients 16         # 16 clients at once (default 1)
    python benchmarks/instructions.py --rev HEAD --compare HEAD~3   # two commits, the working tree untouched
    python benchmarks/instructions.py put --set inline_max=0     # a node setting: 4 KiB PUTs as chunks

Each workload runs the node twice under ``valgrind --tool=cachegrind --cache-sim=no`` (the node's Python
process and its threads; the storage agent it starts is not counted), once with a few requests and once with
``--requests`` more, from one client on one keep-alive connection (``--clients``: more, at once), and prints the
difference in instructions divided by the difference in requests: what one more request costs, start-up and
shut-down cancelled out. Counts repeat within about 1.5% from run to run. Asserts nothing.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.s3_bench import Conn, Target, node_settings, tree  # noqa: E402
from tests.procs import NodeProcess  # noqa: E402
from trio_sos.agent.binary import agent_binary  # noqa: E402

WORKLOADS = ("get", "put", "delete", "head")
FEW = 30
KEYS = 20


def count(workload: str, requests: int, doomed: int, base: Path, tree_root: Path, clients: int,
          extra: dict | None = None) -> int:
    """The node's instruction count over a run that serves ``requests`` requests of ``workload``, after writing
    ``doomed`` objects for DELETEs to remove (as many in every run, so that they cancel out)."""
    log = base / "valgrind.log"
    node = NodeProcess(base / "node", settings={"workers": 1, "gc_interval": 3600.0, **(extra or {})}, prefix=(
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        f"--log-file={log}"), cwd=str(tree_root))
    node.start(timeout=600)
    try:
        target = Target("trio_sos", node.port, lambda: tree(node.pid), True)
        conn, signer = Conn(node.port), target.signer()
        target.call(conn, signer, "PUT", "/bench")
        body = os.urandom(4096)
        for i in range(KEYS):
            target.call(conn, signer, "PUT", f"/bench/small/{i:08d}", body=body)
        for i in range(doomed if workload == "delete" else 0):
            target.call(conn, signer, "PUT", f"/bench/doomed/{i}", body=body)

        def client(mine: range) -> None:
            conn, signer, rng = Conn(node.port), target.signer(), random.Random(mine.start)
            for i in mine:
                key = f"/bench/small/{rng.randrange(KEYS):08d}"
                if workload == "get":
                    status, _, got = target.call(conn, signer, "GET", key)
                    ok = status == 200 and got == body
                elif workload == "head":
                    status, _, _ = target.call(conn, signer, "HEAD", key)
                    ok = status == 200
                elif workload == "put":
                    status, _, _ = target.call(conn, signer, "PUT", key, body=body)
                    ok = status == 200
                else:  # each DELETE removes an object that is there
                    status, _, _ = target.call(conn, signer, "DELETE", f"/bench/doomed/{i}")
                    ok = status == 204
                if not ok:
                    raise AssertionError(f"{workload}: HTTP {status}")
            if conn.sock is not None:
                conn.sock.close()

        share = -(-requests // clients)
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            for done in [pool.submit(client, range(i, min(i + share, requests))) for i in range(0, requests, share)]:
                done.result()
        if conn.sock is not None:
            conn.sock.close()
    finally:
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
        node.proc.wait(600)
    found = re.search(r"I\s+refs:\s+([\d,]+)", log.read_text())
    if found is None:
        raise RuntimeError(f"no instruction count in {log}")
    return int(found.group(1).replace(",", ""))


def per_request(workload: str, requests: int, tree_root: Path, clients: int = 1, extra: dict | None = None) -> float:
    """What one more request of ``workload`` costs the node of the source tree at ``tree_root`` (``extra``: node
    settings)."""
    with tempfile.TemporaryDirectory(prefix="instructions-") as tmp:
        few = count(workload, FEW, FEW + requests, Path(tmp) / "few", tree_root, clients, extra)
        many = count(workload, FEW + requests, FEW + requests, Path(tmp) / "many", tree_root, clients, extra)
    return (many - few) / requests


@contextlib.contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """A worktree of ``rev``, whose ``trio_sos`` a node started there imports (the agent stays this tree's: see
    ``main``)."""
    where = Path(tempfile.mkdtemp(prefix="instructions-rev-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(where), rev], check=True)
    try:
        yield where
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], check=False)
        shutil.rmtree(where.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD", help=f"of {', '.join(WORKLOADS)} (default: all)")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=1, help="concurrent clients, each on its own connection")
    parser.add_argument("--compare", metavar="REV", help="also count a commit's node (a git revision)")
    parser.add_argument("--rev", help="count this commit's node instead of the working tree's")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a node setting, repeatable (e.g. inline_max=0: 4 KiB bodies as chunks on the agent)")
    args = parser.parse_args()
    extra = node_settings(parser, args.set)
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install -y valgrind)")
    # every node counted runs this tree's agent (a worktree has none built; the agent is not counted anyway)
    os.environ.setdefault("TRIO_SOS_AGENT_BIN", str(agent_binary()))
    workloads = args.workloads or list(WORKLOADS)
    if unknown := [w for w in workloads if w not in WORKLOADS]:
        parser.error(f"unknown workload {unknown[0]!r}: one of {', '.join(WORKLOADS)}")
    if args.rev:
        with checkout(args.rev) as where:
            ours = {w: per_request(w, args.requests, where, args.clients, extra) for w in workloads}
    else:
        ours = {w: per_request(w, args.requests, ROOT, args.clients, extra) for w in workloads}
    theirs: dict[str, float] = {}
    if args.compare:
        with checkout(args.compare) as where:
            theirs = {w: per_request(w, args.requests, where, args.clients, extra) for w in workloads}
    print(f"| workload | {args.rev or 'this tree'}{f' | {args.compare} | change' if theirs else ''} |")
    print(f"|---|---|{'---|---|' if theirs else ''}")
    for w in workloads:
        line = f"| {w} | {ours[w]:,.0f} |"
        if theirs:
            line += f" {theirs[w]:,.0f} | {100 * (ours[w] / theirs[w] - 1):+.1f}% |"
        print(line)


if __name__ == "__main__":
    main()
