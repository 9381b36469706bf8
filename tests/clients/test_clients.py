"""Real S3 clients at their default settings against a real node: s3cmd, rclone, the MinIO Python SDK.

Each does: create a bucket; small and large (multipart) uploads; listings with prefix/delimiter; whole and ranged
downloads; a copy; metadata; a directory synced up and back down, compared by hash; deletes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.procs import make_certificate

MiB = 1 << 20


def need(path: str) -> str:
    """The client program at ``path``, or a visible skip saying it is missing (scripts/test.sh installs it)."""
    if os.access(path, os.X_OK):
        return path
    pytest.skip(f"client {path} is not installed (scripts/install-test-deps.sh installs it)")


def digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def make_tree(root: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "top.txt").write_bytes(b"top")
    (root / "a" / "mid.bin").write_bytes(os.urandom(300_000))
    (root / "a" / "b" / "deep é.txt").write_bytes(b"deep")
    (root / "empty").write_bytes(b"")


def big_file(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "big.bin"
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            f.write(block[i % 7 :] + block[: i % 7])
    return path


def populate(node, bucket: str, prefix: str = "many/", count: int = 1001) -> list[str]:
    """More keys than one listing page holds, written with boto3 (the client under test then lists them)."""
    from concurrent.futures import ThreadPoolExecutor

    s3 = node.client()
    keys = [f"{prefix}{i:05d}" for i in range(count)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b"."), keys))
    return keys


def curl_get(url: str) -> bytes:
    done = subprocess.run(["curl", "-sSf", url], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def test_s3cmd(node, tmp_path) -> None:
    s3cmd = need("/usr/bin/s3cmd")
    u = node.users[0]
    cfg = tmp_path / "s3cfg"
    host = node.endpoint.split("://", 1)[1]
    cfg.write_text(f"[default]\naccess_key = {u['access_key']}\nsecret_key = {u['secret_key']}\n"
                   f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\nbucket_location = us-east-1\n")
    s = lambda *args: run([s3cmd, "-c", str(cfg), *args])  # noqa: E731
    s("mb", "s3://s3cmd-bucket")
    big = big_file(tmp_path, 100 * MiB)
    s("put", str(big), "s3://s3cmd-bucket/big/one.bin")  # 15 MiB multipart chunks by default
    head = node.client().head_object(Bucket="s3cmd-bucket", Key="big/one.bin")
    assert head["ContentLength"] == 100 * MiB and head["ETag"].endswith('-7"')
    s("put", "--add-header=x-amz-meta-colour:green", str(big.parent / "big.bin"), "s3://s3cmd-bucket/meta.bin")
    assert "colour" in node.client().head_object(Bucket="s3cmd-bucket", Key="meta.bin")["Metadata"]
    back = tmp_path / "back.bin"
    s("get", "s3://s3cmd-bucket/big/one.bin", str(back))
    assert hashlib.md5(back.read_bytes()).digest() == hashlib.md5(big.read_bytes()).digest()
    src = tmp_path / "tree"
    make_tree(src)
    s("sync", str(src) + "/", "s3://s3cmd-bucket/tree/")
    listing = s("ls", "s3://s3cmd-bucket/tree/").stdout
    assert "DIR" in listing and "s3://s3cmd-bucket/tree/a/" in listing and "top.txt" in listing
    down = tmp_path / "down"
    down.mkdir()
    s("sync", "s3://s3cmd-bucket/tree/", str(down) + "/")
    assert digest_tree(down) == digest_tree(src)
    s("cp", "s3://s3cmd-bucket/tree/top.txt", "s3://s3cmd-bucket/copied.txt")
    assert node.client().get_object(Bucket="s3cmd-bucket", Key="copied.txt")["Body"].read() == b"top"
    import time

    url = s("signurl", "s3://s3cmd-bucket/tree/top.txt", str(int(time.time()) + 300)).stdout.strip()
    assert curl_get(url) == b"top"
    keys = populate(node, "s3cmd-bucket")
    listed = s("ls", "s3://s3cmd-bucket/many/").stdout.splitlines()
    assert [line.split()[-1].rsplit("/", 1)[1] for line in listed] == [k.split("/")[1] for k in keys]
    s("del", "--recursive", "--force", "s3://s3cmd-bucket/")
    s("rb", "s3://s3cmd-bucket")


def rclone_runner(rclone: str, node, tmp_path: Path):
    """``(r, env)``: ``r(*args)`` runs rclone with the remote ``t:`` configured for the node (its first user) by
    the environment ``env``."""
    u = node.users[0]
    # The AWS SDK in rclone refuses a plain-HTTP endpoint when AWS_CA_BUNDLE is set (as on some machines).
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env = {**base, "RCLONE_CONFIG_T_TYPE": "s3", "RCLONE_CONFIG_T_PROVIDER": "Other",
           "RCLONE_CONFIG_T_ACCESS_KEY_ID": u["access_key"], "RCLONE_CONFIG_T_SECRET_ACCESS_KEY": u["secret_key"],
           "RCLONE_CONFIG_T_ENDPOINT": node.endpoint, "RCLONE_CONFIG_T_REGION": "us-east-1",
           "RCLONE_CONFIG": str(tmp_path / "none.conf")}
    return (lambda *args, **kw: run([rclone, *args], env=env, **kw)), env


def test_rclone(node, tmp_path) -> None:
    rclone = need("/usr/bin/rclone")
    r, env = rclone_runner(rclone, node, tmp_path)
    r("mkdir", "t:rclone-bucket")
    src = tmp_path / "tree"
    make_tree(src)
    r("sync", str(src), "t:rclone-bucket/tree")
    r("check", str(src), "t:rclone-bucket/tree")  # sizes and MD5s, both sides
    assert sorted(r("lsf", "t:rclone-bucket/tree").stdout.split()) == ["a/", "empty", "top.txt"]
    down = tmp_path / "down"
    r("copy", "t:rclone-bucket/tree", str(down))
    assert digest_tree(down) == digest_tree(src)
    big = big_file(tmp_path, 100 * MiB)
    with open(big, "rb") as stdin:  # streamed from stdin: size unknown, so multipart
        r("rcat", "t:rclone-bucket/big.bin", stdin=stdin)
    head = node.client().head_object(Bucket="rclone-bucket", Key="big.bin")
    assert head["ContentLength"] == 100 * MiB and "-" in head["ETag"]
    got = subprocess.run([rclone, "cat", "--offset", str(50 * MiB), "--count", "10", "t:rclone-bucket/big.bin"],
                         env=env, capture_output=True, timeout=120, check=True).stdout
    assert got == big.read_bytes()[50 * MiB : 50 * MiB + 10]
    r("copyto", "t:rclone-bucket/tree/top.txt", "t:rclone-bucket/copy.txt")
    assert r("cat", "t:rclone-bucket/copy.txt").stdout == "top"
    assert curl_get(r("link", "t:rclone-bucket/copy.txt").stdout.strip()) == b"top"  # a presigned URL
    keys = populate(node, "rclone-bucket")
    assert r("lsf", "t:rclone-bucket/many").stdout.split() == [k.split("/")[1] for k in keys]
    r("purge", "t:rclone-bucket")
    assert "rclone-bucket" not in r("lsd", "t:").stdout


def test_rclone_versions(node, tmp_path) -> None:
    """rclone's own versioning commands: enable it, see old versions (``--s3-versions`` names them with their
    date), read one back and restore it by a server-side copy, and see a deleted file's history."""
    rclone = need("/usr/bin/rclone")
    r, _ = rclone_runner(rclone, node, tmp_path)
    r("mkdir", "t:rclone-ver")
    assert r("backend", "versioning", "t:rclone-ver", "Enabled").stdout.strip() == "Enabled"
    assert r("backend", "versioning", "t:rclone-ver").stdout.strip() == "Enabled"
    for text in ("one", "two"):
        r("rcat", "t:rclone-ver/notes.txt", input=text)
    assert r("cat", "t:rclone-ver/notes.txt").stdout == "two"
    names = r("lsf", "--s3-versions", "t:rclone-ver").stdout.split()
    old = [n for n in names if n != "notes.txt"]
    assert "notes.txt" in names and len(old) == 1 and old[0].startswith("notes-v"), names
    assert r("cat", "--s3-versions", f"t:rclone-ver/{old[0]}").stdout == "one"
    r("copyto", "--s3-versions", f"t:rclone-ver/{old[0]}", "t:rclone-ver/notes.txt")  # restore the old one
    assert r("cat", "t:rclone-ver/notes.txt").stdout == "one"
    r("deletefile", "t:rclone-ver/notes.txt")
    assert r("lsf", "t:rclone-ver").stdout.split() == []
    assert len(r("lsf", "--s3-versions", "t:rclone-ver").stdout.split()) == 3  # the history stays


def test_minio_py(node, tmp_path) -> None:
    pytest.importorskip("minio", reason="the MinIO Python SDK is not installed (the project's test extras have it)")
    from minio import Minio
    from minio.commonconfig import CopySource
    from minio.deleteobjects import DeleteObject

    u = node.users[0]
    mc = Minio(node.endpoint.split("://", 1)[1], access_key=u["access_key"], secret_key=u["secret_key"],
               secure=False, region="us-east-1")
    mc.make_bucket("minio-bucket")
    assert mc.bucket_exists("minio-bucket")
    big = big_file(tmp_path, 100 * MiB)
    mc.fput_object("minio-bucket", "big/one.bin", str(big), metadata={"x-amz-meta-colour": "blue"})
    stat = mc.stat_object("minio-bucket", "big/one.bin")
    assert stat.size == 100 * MiB and "-" in stat.etag and stat.metadata["x-amz-meta-colour"] == "blue"
    back = tmp_path / "back.bin"
    mc.fget_object("minio-bucket", "big/one.bin", str(back))
    assert hashlib.md5(back.read_bytes()).digest() == hashlib.md5(big.read_bytes()).digest()
    part = mc.get_object("minio-bucket", "big/one.bin", offset=10, length=20)
    assert part.read() == big.read_bytes()[10:30]
    part.close()
    part.release_conn()
    import io

    for i in range(5):
        mc.put_object("minio-bucket", f"dir/{i}.txt", io.BytesIO(b"x" * i), i)
    top = sorted(o.object_name for o in mc.list_objects("minio-bucket"))
    assert top == ["big/", "dir/"]
    assert len(list(mc.list_objects("minio-bucket", prefix="dir/", recursive=True))) == 5
    mc.copy_object("minio-bucket", "copied.txt", CopySource("minio-bucket", "dir/3.txt"))
    assert mc.get_object("minio-bucket", "copied.txt").read() == b"xxx"
    errors = list(mc.remove_objects("minio-bucket", [DeleteObject(f"dir/{i}.txt") for i in range(5)]))
    assert errors == []
    assert sorted(o.object_name for o in mc.list_objects("minio-bucket", recursive=True)) == ["big/one.bin",
                                                                                             "copied.txt"]
    assert curl_get(mc.presigned_get_object("minio-bucket", "copied.txt")) == b"xxx"
    keys = populate(node, "minio-bucket")
    assert [o.object_name for o in mc.list_objects("minio-bucket", prefix="many/")] == keys
    shutil.rmtree(tmp_path / "tree", ignore_errors=True)


def test_clients_over_https(node_factory, tmp_path) -> None:
    """s3cmd, rclone and minio-py against the node's own TLS listener, trusting a certificate made here."""
    s3cmd, rclone = need("/usr/bin/s3cmd"), need("/usr/bin/rclone")
    from minio import Minio

    crt, key = make_certificate(tmp_path)
    node = node_factory(tls_cert=str(crt), tls_key=str(key))
    assert node.endpoint.startswith("https://")
    host = node.endpoint.split("://", 1)[1]
    u = node.users[0]
    big = big_file(tmp_path, 20 * MiB)
    node.client(verify=str(crt)).create_bucket(Bucket="tls-clients")

    cfg = tmp_path / "s3cfg"
    cfg.write_text(f"[default]\naccess_key = {u['access_key']}\nsecret_key = {u['secret_key']}\nhost_base = {host}\n"
                   f"host_bucket = {host}\nuse_https = True\nca_certs_file = {crt}\ncheck_ssl_certificate = True\n")
    run([s3cmd, "-c", str(cfg), "put", str(big), "s3://tls-clients/s3cmd.bin"])
    run([s3cmd, "-c", str(cfg), "get", "s3://tls-clients/s3cmd.bin", str(tmp_path / "s3cmd.back")])
    assert (tmp_path / "s3cmd.back").read_bytes() == big.read_bytes()

    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env = {**base, "RCLONE_CONFIG_T_TYPE": "s3", "RCLONE_CONFIG_T_PROVIDER": "Other",
           "RCLONE_CONFIG_T_ACCESS_KEY_ID": u["access_key"], "RCLONE_CONFIG_T_SECRET_ACCESS_KEY": u["secret_key"],
           "RCLONE_CONFIG_T_ENDPOINT": node.endpoint, "RCLONE_CONFIG_T_REGION": "us-east-1",
           "RCLONE_CONFIG": str(tmp_path / "none.conf")}
    run([rclone, "--ca-cert", str(crt), "copyto", str(big), "t:tls-clients/rclone.bin"], env=env)
    run([rclone, "--ca-cert", str(crt), "copyto", "t:tls-clients/rclone.bin", str(tmp_path / "rclone.back")],
        env=env)
    assert (tmp_path / "rclone.back").read_bytes() == big.read_bytes()

    import urllib3

    mc = Minio(host, access_key=u["access_key"], secret_key=u["secret_key"], secure=True, region="us-east-1",
               http_client=urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=str(crt)))
    mc.fput_object("tls-clients", "minio.bin", str(big))
    mc.fget_object("tls-clients", "minio.bin", str(tmp_path / "minio.back"))
    assert (tmp_path / "minio.back").read_bytes() == big.read_bytes()
