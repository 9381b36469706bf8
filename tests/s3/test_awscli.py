"""End to end with the AWS CLI (Debian's awscli, v2) against a real node: s3 and s3api commands."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.procs import make_certificate

AWS = "/usr/bin/aws"

if not os.access(AWS, os.X_OK):
    pytest.skip("client /usr/bin/aws (Debian's awscli) is not installed (scripts/install-test-deps.sh installs it)",
                allow_module_level=True)


@pytest.fixture
def aws(node, tmp_path):
    home = tmp_path / "awshome"
    home.mkdir()
    u = node.users[0]
    (home / "credentials").write_text(
        f"[default]\naws_access_key_id = {u['access_key']}\naws_secret_access_key = {u['secret_key']}\n")
    # the CLI's defaults: files over 8 MiB go multipart
    (home / "config").write_text("[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "AWS_CONFIG_FILE": str(home / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"), "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_PAGER": ""}

    def run(*args: str, check: bool = True, endpoint: str | None = None, ca: str | None = None
            ) -> subprocess.CompletedProcess:
        extra = ["--ca-bundle", ca] if ca else []
        done = subprocess.run([AWS, "--endpoint-url", endpoint or node.endpoint, *extra, *args], env=env,
                              capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done

    run.node = node
    return run


def digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_aws_s3_commands(aws, tmp_path) -> None:
    aws("s3", "mb", "s3://cli-bucket")
    assert "cli-bucket" in aws("s3", "ls").stdout
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    files = {"a.txt": b"hello", "sub/b.bin": os.urandom(3 << 20), "sub/deeper/c d é.txt": b"unicode name",
             "big.bin": os.urandom(100 << 20), "empty": b""}
    for name, body in files.items():
        (src / name).write_bytes(body)
    aws("s3", "cp", str(src / "big.bin"), "s3://cli-bucket/one/big.bin")
    got = tmp_path / "big.back"
    aws("s3", "cp", "s3://cli-bucket/one/big.bin", str(got))
    assert got.read_bytes() == files["big.bin"]
    aws("s3", "cp", "s3://cli-bucket/one/big.bin", "s3://cli-bucket/one/copy.bin")  # a server-side copy
    head = json.loads(aws("s3api", "head-object", "--bucket", "cli-bucket", "--key", "one/copy.bin").stdout)
    assert head["ContentLength"] == len(files["big.bin"])
    aws("s3", "sync", str(src), "s3://cli-bucket/tree/")
    listing = aws("s3", "ls", "s3://cli-bucket/tree/").stdout
    assert "PRE sub/" in listing and "a.txt" in listing
    recursive = aws("s3", "ls", "--recursive", "s3://cli-bucket/tree/").stdout
    assert "tree/sub/deeper/c d é.txt" in recursive
    down = tmp_path / "down"
    aws("s3", "sync", "s3://cli-bucket/tree/", str(down))
    assert digest_tree(down) == digest_tree(src)
    # a second sync has nothing to do
    assert aws("s3", "sync", str(src), "s3://cli-bucket/tree/").stdout.strip() == ""
    url = aws("s3", "presign", "s3://cli-bucket/tree/a.txt", "--expires-in", "300").stdout.strip()
    got = subprocess.run(["curl", "-sSf", url], capture_output=True, timeout=60)
    assert got.returncode == 0 and got.stdout == b"hello"
    from tests.clients.test_clients import populate

    keys = populate(aws.node, "cli-bucket")
    listed = aws("s3", "ls", "s3://cli-bucket/many/").stdout.splitlines()
    assert [line.split()[-1] for line in listed] == [k.split("/")[1] for k in keys]
    assert len(json.loads(aws("s3api", "list-objects-v2", "--bucket", "cli-bucket", "--prefix", "many/").stdout)
               ["Contents"]) == 1001  # the CLI pages through them
    aws("s3", "rm", "--recursive", "s3://cli-bucket/")
    aws("s3", "rb", "s3://cli-bucket")
    assert "cli-bucket" not in aws("s3", "ls").stdout


def test_aws_cli_versioning(aws, tmp_path) -> None:
    """Versioning with the AWS CLI at its defaults: enable, overwrite, list versions, read and restore an old one,
    delete (a marker) and undelete (the marker removed)."""
    api = lambda *args, check=True: aws("s3api", *args, check=check)  # noqa: E731
    api("create-bucket", "--bucket", "cli-ver")
    api("put-bucket-versioning", "--bucket", "cli-ver", "--versioning-configuration", "Status=Enabled")
    assert json.loads(api("get-bucket-versioning", "--bucket", "cli-ver").stdout)["Status"] == "Enabled"
    ids = []
    for text in ("first", "second"):
        (tmp_path / "body").write_text(text)
        ids.append(json.loads(api("put-object", "--bucket", "cli-ver", "--key", "doc", "--body",
                                  str(tmp_path / "body")).stdout)["VersionId"])
    listed = json.loads(api("list-object-versions", "--bucket", "cli-ver").stdout)
    assert [(v["VersionId"], v["IsLatest"]) for v in listed["Versions"]] == [(ids[1], True), (ids[0], False)]
    api("get-object", "--bucket", "cli-ver", "--key", "doc", "--version-id", ids[0], str(tmp_path / "old"))
    assert (tmp_path / "old").read_text() == "first"
    deleted = json.loads(api("delete-object", "--bucket", "cli-ver", "--key", "doc").stdout)
    assert deleted["DeleteMarker"] is True
    assert "doc" not in aws("s3", "ls", "s3://cli-ver/").stdout
    assert api("head-object", "--bucket", "cli-ver", "--key", "doc", check=False).returncode != 0
    api("delete-object", "--bucket", "cli-ver", "--key", "doc", "--version-id", deleted["VersionId"])  # undelete
    api("copy-object", "--bucket", "cli-ver", "--key", "doc", "--copy-source", f"cli-ver/doc?versionId={ids[0]}")
    api("get-object", "--bucket", "cli-ver", "--key", "doc", str(tmp_path / "restored"))
    assert (tmp_path / "restored").read_text() == "first"
    assert len(json.loads(api("list-object-versions", "--bucket", "cli-ver").stdout)["Versions"]) == 3


def test_aws_s3api_commands(aws, tmp_path) -> None:
    aws("s3api", "create-bucket", "--bucket", "api-bucket")
    body = tmp_path / "body"
    body.write_bytes(bytes(range(256)) * 100)
    put = json.loads(aws("s3api", "put-object", "--bucket", "api-bucket", "--key", "dir/obj", "--body", str(body),
                         "--content-type", "application/x-test", "--metadata", "colour=red,size=big").stdout)
    assert put["ETag"] == '"%s"' % hashlib.md5(body.read_bytes()).hexdigest()
    head = json.loads(aws("s3api", "head-object", "--bucket", "api-bucket", "--key", "dir/obj").stdout)
    assert head["ContentType"] == "application/x-test" and head["Metadata"] == {"colour": "red", "size": "big"}
    out = tmp_path / "part"
    ranged = json.loads(aws("s3api", "get-object", "--bucket", "api-bucket", "--key", "dir/obj", "--range",
                            "bytes=10-19", str(out)).stdout)
    assert out.read_bytes() == bytes(range(10, 20)) and ranged["ContentRange"] == "bytes 10-19/25600"
    listed = json.loads(aws("s3api", "list-objects-v2", "--bucket", "api-bucket", "--delimiter", "/").stdout)
    assert listed["CommonPrefixes"] == [{"Prefix": "dir/"}]
    missing = aws("s3api", "head-object", "--bucket", "api-bucket", "--key", "nope", check=False)
    assert missing.returncode != 0 and "404" in missing.stderr
    bad = aws("s3api", "delete-bucket", "--bucket", "api-bucket", check=False)
    assert bad.returncode != 0 and "BucketNotEmpty" in bad.stderr
    aws("s3api", "delete-object", "--bucket", "api-bucket", "--key", "dir/obj")
    aws("s3api", "delete-bucket", "--bucket", "api-bucket")
    assert shutil.which(AWS)


@pytest.fixture
def node(node_factory, tmp_path):
    """A node serving plain HTTP and, on a second port, HTTPS with a certificate made for the test."""
    crt, key = make_certificate(tmp_path)
    return node_factory(tls_cert=str(crt), tls_key=str(key), tls_listen="127.0.0.1:0")


def test_aws_cli_over_https(aws, node, tmp_path) -> None:
    https = node.endpoints[1]
    aws("s3", "mb", "s3://tls-bucket", endpoint=https, ca=node.settings["tls_cert"])
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(9 << 20))  # multipart at the CLI's defaults
    aws("s3", "cp", str(src), "s3://tls-bucket/f.bin", endpoint=https, ca=node.settings["tls_cert"])
    back = tmp_path / "back.bin"
    aws("s3", "cp", "s3://tls-bucket/f.bin", str(back), endpoint=https, ca=node.settings["tls_cert"])
    assert back.read_bytes() == src.read_bytes()
