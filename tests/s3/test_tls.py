"""HTTPS served by the node itself, and the clients over it with a certificate the test makes and trusts."""

from __future__ import annotations

import os

import pytest

from tests.procs import make_certificate


@pytest.fixture
def cert(tmp_path):
    crt, key = make_certificate(tmp_path)
    return crt, key


@pytest.fixture
def tls_node(node_factory, cert):
    crt, key = cert
    return node_factory(tls_cert=str(crt), tls_key=str(key), tls_listen="127.0.0.1:0")


def test_boto3_over_https(tls_node, cert) -> None:
    crt, _ = cert
    http_url, https_url = tls_node.endpoints
    assert http_url.startswith("http://") and https_url.startswith("https://")
    s3 = tls_node.client(endpoint=https_url, verify=str(crt))
    s3.create_bucket(Bucket="secure")
    body = os.urandom(3 << 20)
    s3.put_object(Bucket="secure", Key="k", Body=body)
    assert s3.get_object(Bucket="secure", Key="k")["Body"].read() == body
    # the same object over plain HTTP on the other listener
    assert tls_node.client()._endpoint.host.startswith("http://")
    assert tls_node.client().get_object(Bucket="secure", Key="k")["Body"].read() == body


def test_untrusted_client_cannot_connect_and_server_survives(tls_node, cert) -> None:
    import ssl
    import socket

    https_port = int(tls_node.endpoints[1].rsplit(":", 1)[1])
    raw = socket.create_connection(("127.0.0.1", https_port), timeout=10)
    raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP to the TLS port
    try:
        raw.recv(100)
    except OSError:
        pass
    raw.close()
    ctx = ssl.create_default_context()  # does not trust the test certificate
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection(("127.0.0.1", https_port), timeout=10) as sock:
            ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    crt, _ = cert
    assert tls_node.client(endpoint=tls_node.endpoints[1], verify=str(crt)).list_buckets()["Buckets"] == []
