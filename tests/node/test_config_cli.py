"""Configuration and the command line: settings from file, environment and flags; errors name the setting;
users managed with `python -m trio_sos user`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trio_sos.config import ConfigError, load_config


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "trio_sos", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def test_precedence_file_env_flags(tmp_path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('listen = "127.0.0.1:9100"\nregion = "eu-west-1"\nchunk_size = "4M"\n'
                   '[[users]]\naccess_key = "AK"\nsecret_key = "secretsecret"\n')
    config = load_config(cfg, env={"TRIO_SOS_REGION": "eu-central-1", "TRIO_SOS_GC_DELAY": "5"},
                         overrides={"listen": "127.0.0.1:9200"})
    assert config.listen == "127.0.0.1:9200" and config.region == "eu-central-1"
    assert config.chunk_size == 4 << 20 and config.gc_delay == 5.0
    assert config.users[0].id == "AK" and config.users[0].display_name == "AK"


def test_workers_default_to_the_cores(tmp_path) -> None:
    import os

    assert load_config(None, env={}).effective_workers == len(os.sched_getaffinity(0))
    assert load_config(None, env={"TRIO_SOS_WORKERS": "3"}).effective_workers == 3


@pytest.mark.parametrize("text, env, setting", [
    ('listen = "nope"', {}, "listen"),
    ('chunk_size = "lots"', {}, "chunk_size"),
    ('chunk_size = "1K"', {}, "chunk_size"),
    ('colour = "blue"', {}, "colour"),
    ("", {"TRIO_SOS_GC_DELAY": "soon"}, "gc_delay"),
    ('[[users]]\naccess_key = "AK"\n', {}, "users[0].secret_key"),
    ("listen = [", {}, "config file"),
    ('inline_max = "2M"', {}, "inline_max"),
    ("", {"TRIO_SOS_WORKERS": "many"}, "workers"),
    ('cassandra = "h1:9042,h2:9043"', {}, "cassandra"),
    ('cassandra = "h1"\ncassandra_consistency = "ONE"', {}, "cassandra_consistency"),
    ('cassandra_keyspace = "no-dashes"', {}, "cassandra_keyspace"),
])
def test_bad_settings_name_themselves(tmp_path, text, env, setting) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg, env=env)
    assert setting in str(info.value) and "\n" not in str(info.value)
    done = run_cli("serve", "--config", str(cfg), "--data-dir", str(tmp_path / "d"), env=env)
    assert done.returncode == 2 and setting in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_unreachable_cassandra_is_one_clear_line(tmp_path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = run_cli("serve", "--cassandra", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "d"), "--workers", "1",
                   "--listen", "127.0.0.1:0")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("trio_sos: cannot reach Cassandra at 127.0.0.1")


def test_user_commands_and_first_start_admin(tmp_path) -> None:
    data = str(tmp_path / "d")
    created = run_cli("user", "create", "carol", "--email", "c@example.com", "--data-dir", data)
    assert created.returncode == 0, created.stderr
    access_key = created.stdout.split("access key: ")[1].split()[0]
    listed = run_cli("user", "list", "--data-dir", data)
    assert "carol" in listed.stdout and access_key in listed.stdout and "secret" not in listed.stdout
    assert run_cli("user", "create", "carol", "--data-dir", data).returncode == 1
    rotated = run_cli("user", "rotate", "carol", "--data-dir", data)
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.split("access key: ")[1].split()[0]
    listed = run_cli("user", "list", "--data-dir", data).stdout
    assert new_key in listed and access_key not in listed
    assert run_cli("user", "rotate", "nobody", "--data-dir", data).returncode == 1
    assert run_cli("user", "delete", "carol", "--data-dir", data).returncode == 0
    assert run_cli("user", "delete", "carol", "--data-dir", data).returncode == 1


def test_first_start_prints_admin_keys_once_and_they_work(tmp_path) -> None:
    from tests.procs import NodeProcess

    node = NodeProcess(tmp_path / "n", {}, users=())
    node.start()
    try:
        text = "\n".join(node.stdout_lines)
        access_key = text.split("access key: ")[1].split()[0]
        secret_key = text.split("secret key: ")[1].split()[0]
        import boto3

        s3 = boto3.client("s3", endpoint_url=node.endpoint, region_name="us-east-1",
                          aws_access_key_id=access_key, aws_secret_access_key=secret_key)
        s3.create_bucket(Bucket="admins")
        node.restart()
        assert not any("secret key" in line for line in node.stdout_lines)  # printed on the first start only
        s3 = boto3.client("s3", endpoint_url=node.endpoint, region_name="us-east-1",
                          aws_access_key_id=access_key, aws_secret_access_key=secret_key)
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["admins"]
    finally:
        node.stop()


def test_virtual_host_addressing(node_factory) -> None:
    import boto3
    from botocore.config import Config

    node = node_factory(base_domain="s3.localtest")
    u = node.users[0]
    path_style = node.client()
    path_style.create_bucket(Bucket="vhost")
    path_style.put_object(Bucket="vhost", Key="a/b", Body=b"by path")
    import urllib3

    # virtual-host style: the bucket is in the Host header; the connection still goes to 127.0.0.1
    s3 = boto3.client("s3", endpoint_url=f"http://s3.localtest:{node.port}", region_name="us-east-1",
                      aws_access_key_id=u["access_key"], aws_secret_access_key=u["secret_key"],
                      config=Config(s3={"addressing_style": "virtual"}))
    orig = urllib3.util.connection.create_connection

    def to_loopback(address, *args, **kwargs):
        return orig(("127.0.0.1", address[1]), *args, **kwargs)

    urllib3.util.connection.create_connection = to_loopback
    try:
        assert s3.get_object(Bucket="vhost", Key="a/b")["Body"].read() == b"by path"
        s3.put_object(Bucket="vhost", Key="c", Body=b"by host")
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="vhost")["Contents"]] == ["a/b", "c"]
    finally:
        urllib3.util.connection.create_connection = orig
