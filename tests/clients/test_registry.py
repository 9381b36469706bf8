"""The Docker registry (Debian's docker-registry 2.8, S3 storage driver, default settings: blob downloads are
presigned-URL redirects to the node) on a real node: an image built here as an OCI layout is pushed and pulled back
by skopeo, byte for byte. Nothing comes from the internet."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from .test_clients import need

MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_blob(layout: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def build_oci_layout(layout: Path, layer_sizes: list[int]) -> dict:
    """An image with one layer per size (random, incompressible content), as an OCI image layout."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    layers, diff_ids = [], []
    for i, size in enumerate(layer_sizes):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            info = tarfile.TarInfo(f"file{i}.bin")
            payload = os.urandom(size)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        diff_ids.append("sha256:" + hashlib.sha256(raw.getvalue()).hexdigest())
        compressed = gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **write_blob(layout, compressed)})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **write_blob(layout, config)},
        "layers": layers}).encode()
    desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **write_blob(layout, manifest),
            "annotations": {"org.opencontainers.image.ref.name": "v1"}}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    return {"layers": [layer["digest"] for layer in layers]}


@pytest.fixture
def registry(node, tmp_path):
    binary = need("/usr/bin/docker-registry")
    node.client().create_bucket(Bucket="registry")
    u = node.users[0]
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(f"""version: 0.1
log:
  level: info
storage:
  s3:
    accesskey: {u['access_key']}
    secretkey: {u['secret_key']}
    region: us-east-1
    regionendpoint: {node.endpoint}
    bucket: registry
    secure: false
    v4auth: true
    chunksize: 5242880
    rootdirectory: /
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: test-secret
""")
    log = open(tmp_path / "registry.log", "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # AWS_CA_BUNDLE breaks its SDK
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            env=env)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, (tmp_path / "registry.log").read_text()
            assert time.monotonic() < deadline, "registry did not start"
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
    log.close()


def test_push_and_pull_with_skopeo(registry, node, tmp_path) -> None:
    skopeo = need("/usr/bin/skopeo")
    layout = tmp_path / "image"
    built = build_oci_layout(layout, [12 * MiB, 300_000, 0])  # a layer pushed in several 5 MiB chunks
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = str(tmp_path)
    push = subprocess.run([skopeo, "copy", "--dest-tls-verify=false", f"oci:{layout}:v1",
                           f"docker://{registry}/test/image:v1"], capture_output=True, text=True, timeout=300,
                          env=env)
    assert push.returncode == 0, push.stderr + (tmp_path / "registry.log").read_text()[-3000:]
    out = tmp_path / "pulled"
    pull = subprocess.run([skopeo, "copy", "--src-tls-verify=false", f"docker://{registry}/test/image:v1",
                           f"oci:{out}:v1"], capture_output=True, text=True, timeout=300, env=env)
    assert pull.returncode == 0, pull.stderr + (tmp_path / "registry.log").read_text()[-3000:]
    for digest in built["layers"]:
        name = digest.split(":", 1)[1]
        assert (out / "blobs" / "sha256" / name).read_bytes() == (layout / "blobs" / "sha256" / name).read_bytes()
    # the registry's blobs really are objects in the node's bucket
    keys = [o["Key"] for page in node.client().get_paginator("list_objects_v2").paginate(Bucket="registry")
            for o in page.get("Contents", [])]
    assert any(k.endswith("/data") and "blobs/sha256" in k for k in keys)
    # with its default settings the registry redirected skopeo to presigned URLs of the node for the blobs
    presigned = [line for line in node.log_path.read_text().splitlines()
                 if "auth=sigv4-query op=GetObject bucket=registry method=GET" in line and "status=200" in line]
    assert len(presigned) >= len(built["layers"])
