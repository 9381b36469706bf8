"""A whole trio_sos cluster on one machine: ZooKeeper, three storage agents in two zones, two S3 nodes.

    python examples/local_cluster.py [--dir DIR] [--port 9000 | --port 0] [--admin-port 9100]
                                     [--cassandra HOST:PORT [--keyspace K]]

Needs Debian's ``zookeeper`` package (its jar starts a throwaway ZooKeeper here; no system service is used) and the
project installed (``pip install .``). Starts everything on 127.0.0.1, prints the S3 endpoints, the nodes' admin
listeners (admin API, dashboard, /metrics) and the admin key pair that opens them, and stops everything it started
on ^C (or SIGTERM). The data stays in ``--dir`` (a temporary directory by default, removed at the end). The two
nodes share one SQLite metadata file — or, with ``--cassandra``, the metadata in that (running) Cassandra, as the
nodes of several machines do. See docs/cluster.md for the same on several machines.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ZK_CLASSPATH = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_line(path: Path, pattern: str, proc: subprocess.Popen, timeout: float = 60) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        match = re.search(pattern, text)
        if match:
            return match
        if proc.poll() is not None:
            tail = "\n".join(text.splitlines()[-15:])
            sys.exit(f"{proc.args[:4]} exited with {proc.returncode}; see {path}, which ends:\n{tail}")
        time.sleep(0.1)
    sys.exit(f"timed out waiting for {pattern!r} in {path}")


def zookeeper_serving(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"srvr")
            return b"Mode: standalone" in s.recv(4096)
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="where everything keeps its data (default: a temporary dir)")
    parser.add_argument("--port", type=int, default=9000, help="the first node's S3 port (the second: +1; 0: any free "
                                                               "port for each)")
    parser.add_argument("--admin-port", type=int, help="the first node's admin port (the second: +1; default: --port "
                                                       "+ 100, or 0 when --port is 0; 0: any free port for each)")
    parser.add_argument("--cassandra", help="HOST:PORT of a running Cassandra: the nodes keep the metadata there")
    parser.add_argument("--keyspace", default="trio_sos_example", help="its keyspace (default: trio_sos_example)")
    args = parser.parse_args()
    if args.admin_port is not None:
        admin_port = args.admin_port
    else:
        admin_port = args.port + 100 if args.port else 0
    if not os.path.exists("/usr/share/java/zookeeper.jar"):
        sys.exit("ZooKeeper's jar is missing: apt-get install zookeeper")
    base = args.dir or Path(tempfile.mkdtemp(prefix="trio-sos-cluster-"))
    base.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []

    def spawn(cmd: list[str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    try:
        zk_port = free_port()
        (base / "zk").mkdir(exist_ok=True)
        (base / "zoo.cfg").write_text(f"tickTime=200\ndataDir={base / 'zk'}\nclientPort={zk_port}\n"
                                      "clientPortAddress=127.0.0.1\nadmin.enableServer=false\n"
                                      "4lw.commands.whitelist=srvr\n")
        spawn(["java", "-Xmx256m", "-cp", ZK_CLASSPATH, "org.apache.zookeeper.server.ZooKeeperServerMain",
               str(base / "zoo.cfg")], base / "zookeeper.log")
        while not zookeeper_serving(zk_port):
            time.sleep(0.1)
        zk = f"127.0.0.1:{zk_port}"
        print(f"ZooKeeper  {zk}")
        for i, zone in enumerate(["rack-a", "rack-a", "rack-b"]):
            log = base / f"agent{i}.log"
            proc = spawn([sys.executable, "-m", "trio_sos", "agent", "--zk", zk, "--cluster", "example", "--zone",
                          zone, "--data-dir", str(base / f"agent{i}"), "--listen", f"127.0.0.1:{free_port()}"],
                         log)
            agent_id = wait_line(log, r"agent ([0-9a-f]{32}) registered at (\S+)", proc)
            print(f"agent      {agent_id[1]} at {agent_id[2]} (zone {zone})")
        if args.cassandra:  # the metadata in Cassandra (one replica: a single test node)
            metadata = (f'cassandra = "{args.cassandra}"\ncassandra_keyspace = "{args.keyspace}"\n'
                        "cassandra_replication = \"{'class': 'SimpleStrategy', 'replication_factor': 1}\"\n")
        else:  # the two nodes of one machine share one metadata file
            metadata = f'metadata = "{base / "meta.sqlite3"}"\n'
        first_admin = ""
        for i in range(2):
            log = base / f"node{i}.log"
            config = base / f"node{i}.toml"
            config.write_text(f'zk = "{zk}"\ncluster = "example"\n' + metadata)
            port = args.port + i if args.port else 0
            proc = spawn([sys.executable, "-m", "trio_sos", "serve", "--config", str(config), "--data-dir",
                          str(base / f"node{i}"), "--listen", f"127.0.0.1:{port}", "--admin-listen",
                          f"127.0.0.1:{admin_port + i if admin_port else 0}"], base / f"node{i}.out")
            endpoint = wait_line(base / f"node{i}.out", r"S3 endpoint: (\S+)", proc)
            admin = wait_line(base / f"node{i}.out", r"Admin endpoint: (\S+)", proc)
            first_admin = first_admin or admin[1]
            print(f"S3 node    {endpoint[1]}  admin {admin[1]}" + (f" (metadata in Cassandra {args.cassandra})"
                                                                   if args.cassandra else ""))
        keys = (base / "node0.out").read_text() + (base / "node1.out").read_text()
        access = re.search(r"access key: (\S+)", keys)
        secret = re.search(r"secret key: (\S+)", keys)
        if access and secret:
            print(f"\nadmin key pair: {access[1]} {secret[1]}")
        print(f"\nlogs and data in {base}; `python -m trio_sos admin --endpoint {first_admin} "
              "--access-key ... --secret-key ... status`")
        print("^C stops everything")
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("a process exited; stopping", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in reversed(procs):  # nodes, then agents, then ZooKeeper
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
