"""Server-side copies of a large object: time, and the bytes the agent writes (should be ~0).

    python benchmarks/copy_bench.py [--gib 1] [--parts 8]

Starts a real node (the embedded default: SQLite, the local agent, 8 MiB chunks), PUTs one object of ``--gib``
GiB (random bytes, over raw HTTP from a reused buffer), then measures, in the same run:

- PUT of the object — the reference: what a copy costs when it moves the bytes (a client's GET + PUT, or a
  server that copies chunk bytes) is at least this write;
- CopyObject of it to a new key (metadata-only: each chunk LINKed under a new name);
- UploadPartCopy of it in ``--parts`` ranges that start and end inside chunks, then CompleteMultipartUpload (the
  ranges are read once, for the parts' MD5 ETags; nothing is written);

and for each: seconds, the bytes the agent process wrote (``/proc/PID/io`` write_bytes: what reached the block
layer, fsyncs included) and the growth of the bytes its chunk files hold on disk (each file counted once,
however many names it has). The copies are read back and their MD5 checked against the source's.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.procs import NodeProcess  # noqa: E402
from tests.s3.rawhttp import connect, head_bytes, read_response, sign  # noqa: E402

MiB = 1 << 20


def written(agent: psutil.Process) -> int:
    return agent.io_counters().write_bytes


def on_disk(node: NodeProcess) -> int:
    root = node.data_dir / "agent" / "chunks"
    files = {}
    for shard in root.iterdir():
        for path in shard.iterdir():
            st = path.stat()
            files[st.st_ino] = st.st_size
    return sum(files.values())


def md5_of(s3, key: str) -> str:
    h = hashlib.md5()
    body = s3.get_object(Bucket="bench", Key=key)["Body"]
    for piece in iter(lambda: body.read(4 * MiB), b""):
        h.update(piece)
    return h.hexdigest()


def measure(node: NodeProcess, agent: psutil.Process, what, *args) -> tuple[float, int, int]:
    w0, d0 = written(agent), on_disk(node)
    t0 = time.perf_counter()
    what(*args)
    seconds = time.perf_counter() - t0
    return seconds, written(agent) - w0, on_disk(node) - d0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--parts", type=int, default=8)
    args = parser.parse_args()
    size = int(args.gib * 1024) * MiB
    base = Path(tempfile.mkdtemp(prefix="copy-bench-"))
    node = NodeProcess(base / "node", {"gc_delay": 0, "workers": 1}).start()
    rows = []
    try:
        s3 = node.client()
        s3.create_bucket(Bucket="bench")
        agent = psutil.Process(node.agent_pid())
        block = os.urandom(MiB)
        source_md5 = hashlib.md5()
        for _ in range(size // MiB):
            source_md5.update(block)

        def put() -> None:
            headers = sign(node, "PUT", "/bench/src", {"Content-Length": str(size)})
            sock = connect(node, timeout=600)
            sock.sendall(head_bytes("PUT", "/bench/src", headers))
            for _ in range(size // MiB):
                sock.sendall(block)
            status, _, _ = read_response(sock)
            sock.close()
            assert status == 200, status

        rows.append(("PUT (reference: the bytes written)", *measure(node, agent, put)))

        def copy_object() -> None:
            s3.copy_object(Bucket="bench", Key="copy", CopySource="bench/src")

        rows.append(("CopyObject", *measure(node, agent, copy_object)))

        def part_copy() -> None:
            up = s3.create_multipart_upload(Bucket="bench", Key="parts")["UploadId"]
            step = size // args.parts + 12345  # ranges that start and end inside chunks
            bounds = [(i, min(i + step, size)) for i in range(0, size, step)]
            etags = []
            for number, (first, end) in enumerate(bounds, 1):
                got = s3.upload_part_copy(Bucket="bench", Key="parts", UploadId=up, PartNumber=number,
                                          CopySource="bench/src", CopySourceRange=f"bytes={first}-{end - 1}")
                etags.append(got["CopyPartResult"]["ETag"])
            s3.complete_multipart_upload(Bucket="bench", Key="parts", UploadId=up, MultipartUpload={
                "Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})

        rows.append((f"UploadPartCopy x{args.parts} + Complete", *measure(node, agent, part_copy)))
        verified = {key: md5_of(s3, key) == source_md5.hexdigest() for key in ("copy", "parts")}
        rss = psutil.Process(node.pid).memory_info().rss
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"object {size / MiB:.0f} MiB; copies read back, MD5 equal to the source's: {verified}; node RSS after "
          f"{rss / MiB:.0f} MiB")
    print(f"{'operation':40}{'seconds':>10}{'agent wrote MiB':>17}{'on disk +MiB':>14}{'x PUT time':>12}")
    reference = rows[0][1]
    for name, seconds, wrote, disk in rows:
        print(f"{name:40}{seconds:>10.3f}{wrote / MiB:>17.2f}{disk / MiB:>14.2f}{seconds / reference:>12.3f}")


if __name__ == "__main__":
    main()
