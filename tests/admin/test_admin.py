"""The admin listener of a real node (embedded: SQLite and its local agent): authentication before the upgrade,
the JSON protocol and its errors, floods and a subscriber that never reads, every operation through the CLI,
/metrics moving with traffic, /health and /ready, the access log, and the background workers steered."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import time
from urllib.parse import urlsplit

import pytest
import trio
import trio_websocket
from botocore.exceptions import ClientError

from tests.admin.helpers import (ADMIN, OTHER, admin_settings, cli, cli_json, http_get, metric, metrics, old_date,
                                 session, signed_url)
from trio_sos.admin.client import presign


@pytest.fixture
def admin_node(node_factory):
    return node_factory(**admin_settings())


def test_health_ready_dashboard_and_no_s3(admin_node) -> None:
    status, _, body = http_get(admin_node, "/health")
    assert (status, body) == (200, b"ok\n")
    status, _, body = http_get(admin_node, "/ready")
    ready = json.loads(body)
    assert status == 200 and ready["ready"] is True and ready["metadata"] == "ok"
    assert ready["agents"] == {"writable": 1, "writable_healthy": 1, "write_quorum": 1}
    status, headers, body = http_get(admin_node, "/")
    assert status == 200 and b"<html" in body.lower()
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert http_get(admin_node, "/app.js")[0] == 200
    # never S3, never a file outside the dashboard's directory
    for path in ("/bucket/key", "/..%2f..%2fetc%2fpasswd", "/../config.py", "/static/../server.py", "/.hidden"):
        assert http_get(admin_node, path)[0] == 404, path
    host, port = urlsplit(admin_node.admin_endpoint).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("PUT", "/bucket", body=b"x")
    assert conn.getresponse().status == 405
    conn.close()
    assert http_get(admin_node, "/ws")[0] == 400  # not an upgrade


async def _refused(url: str) -> tuple[int, dict]:
    with trio.fail_after(20):
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with trio_websocket.open_websocket_url(url, connect_timeout=10):
                pass
    return info.value.status_code, json.loads(info.value.body)["error"]


async def test_only_administrators_get_in(admin_node) -> None:
    endpoint = admin_node.admin_endpoint
    ws_url = endpoint.replace("http://", "ws://") + "/ws"
    assert (await _refused(ws_url))[0] == 401  # not signed
    status, error = await _refused(presign(endpoint, ADMIN["access_key"], "not-the-secret-key"))
    assert (status, error["code"]) == (401, "SignatureDoesNotMatch")
    status, error = await _refused(presign(endpoint, "AKIDNOBODY0000000000", "whatever-secret"))
    assert (status, error["code"]) == (401, "InvalidAccessKeyId")
    status, error = await _refused(signed_url(admin_node, OTHER))  # a good signature, but bob is no administrator
    assert (status, error["code"]) == (403, "NotAdministrator")
    status, error = await _refused(signed_url(admin_node, now=old_date(), expires=60))
    assert (status, error["code"]) == (401, "AccessDenied") and "expired" in error["message"]
    assert (await _refused(signed_url(admin_node, expires=3600)))[0] == 401  # longer than 300 s
    # an S3 presigned URL (service s3) is not an admin credential, even for the same user and path
    status, error = await _refused(signed_url(admin_node, service="s3"))
    assert (status, error["code"]) == (401, "AuthorizationQueryParametersError")
    # a signed URL whose query was changed after signing
    assert (await _refused(signed_url(admin_node).replace("X-Amz-Expires=60", "X-Amz-Expires=61")))[0] == 401
    async with session(admin_node) as s:
        assert (await s.ok("ping"))["pong"] is True


async def test_malformed_and_oversized_messages(admin_node) -> None:
    async with session(admin_node) as s:
        for raw, code in [("not json", "bad_message"), ("[1, 2]", "bad_message"), ('{"id": 1}', "bad_message"),
                          ('{"id": [1], "op": "ping"}', "bad_message"), ('{"id": 2, "op": "no.such"}', "unknown_op"),
                          ('{"id": 3, "op": "agents.drain", "args": {"agent": "zz"}}', "bad_args"),
                          ('{"id": 4, "op": "ping", "args": [1]}', "bad_args"),
                          ('{"id": 5, "op": "subscribe", "args": {"topics": ["nope"]}}', "bad_args"),
                          ('{"id": 6, "op": "users.create", "args": {"id": ""}}', "bad_args"),
                          ('{"id": 7, "op": "buckets.usage", "args": {"bucket": "none-such"}}', "no_such_bucket"),
                          ('{"id": 8, "op": "users.delete", "args": {"id": "nobody"}}', "no_such_user"),
                          ('{"id": 9, "op": "agents.drain", "args": {"agent": "' + "ab" * 16 + '"}}', "not_cluster"),
                          ("[" * 60_000, "bad_message"), ('{"a":' * 6_000 + "1" + "}" * 6_000, "bad_message"),
                          ('{"id": 10, "op": "' + "x" * 60_000 + '"}', "unknown_op"),
                          ('{"id": "' + "i" * 300 + '", "op": "ping"}', "bad_message")]:
            await s.ws.send_message(raw)
            with trio.fail_after(10):
                reply = json.loads(await s.ws.get_message())
            assert reply["ok"] is False and reply["error"]["code"] == code, (raw, reply)
        await s.ws.send_message(b"\x00binary")
        with trio.fail_after(10):
            assert json.loads(await s.ws.get_message())["error"]["code"] == "bad_message"
        assert (await s.ok("ping"))["pong"] is True  # the session survives all of that
        await s.ws.send_message("x" * (100 * 1024))  # above the 64 KiB message limit
        with trio.fail_after(10):
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await s.ws.get_message()
        assert info.value.reason.code == 1009
    async with session(admin_node) as s:  # the node serves new sessions after that
        assert (await s.ok("ping"))["pong"] is True


async def test_a_flood_of_requests_is_answered_in_order(admin_node) -> None:
    s3 = admin_node.client()
    async with session(admin_node) as s:
        n = 3000
        with trio.fail_after(120):
            for i in range(n):  # all sent before any reply is read
                await s.ws.send_message(json.dumps({"id": f"r{i}", "op": "ping"}))
            for i in range(n):
                reply = json.loads(await s.ws.get_message())
                assert reply["id"] == f"r{i}" and reply["ok"], reply
    s3.create_bucket(Bucket="after-flood")  # S3 was never held up
    assert s3.head_bucket(Bucket="after-flood")["ResponseMetadata"]["HTTPStatusCode"] == 200


async def _stalled_session(node, nursery, topics):
    """A session whose client does not read: a socket with a tiny receive buffer, and trio-websocket's queue of
    one message."""
    url = urlsplit(signed_url(node))
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((url.hostname, url.port))
    ws = await trio_websocket.wrap_client_stream(nursery, trio.SocketStream(sock), url.netloc,
                                                 f"{url.path}?{url.query}", message_queue_size=1)
    await ws.send_message(json.dumps({"id": 1, "op": "subscribe", "args": {"topics": topics}}))
    return ws


async def test_a_subscriber_that_never_reads_loses_events_not_memory(node_factory) -> None:
    import psutil

    node = node_factory(**admin_settings(slow_request_ms=0))  # every S3 request is an event
    host, port = urlsplit(node.endpoint).netloc.split(":")
    requests = 4000
    async with trio.open_nursery() as nursery, session(node) as reader:
        await reader.ok("subscribe", {"topics": ["requests"]})
        stalled = await _stalled_session(node, nursery, ["requests"])
        rss_before = psutil.Process(node.pid).memory_info().rss

        def traffic() -> None:
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            for i in range(requests):
                conn.request("GET", f"/no-such-bucket-{i % 7}")
                response = conn.getresponse()
                response.read()
                assert response.status == 404
            conn.close()

        await trio.to_thread.run_sync(traffic)
        # the subscriber that reads gets the events (its own queue may have dropped some too)
        seen = 0
        with trio.fail_after(60):
            while seen < 50:
                message = json.loads(await reader.ws.get_message())
                seen += message.get("event") == "request.slow"
        rss_after = psutil.Process(node.pid).memory_info().rss
        assert rss_after - rss_before < 32 << 20, (rss_before, rss_after)
        samples = metrics(node)
        dropped = metric(samples, "trio_sos_admin_events_dropped_total")
        assert dropped > 0
        # the stalled one reads at last: its subscription reply, some events, then a notice of how many it lost
        with trio.fail_after(60):
            first = json.loads(await stalled.get_message())
            assert first["ok"] is True
            counted = 0
            while True:
                message = json.loads(await stalled.get_message())
                if message.get("event") == "dropped":
                    counted = message["data"]["count"]
                    break
        assert 0 < counted <= dropped
        await stalled.aclose()
        nursery.cancel_scope.cancel()


def test_users_through_the_cli(admin_node) -> None:
    out = cli(admin_node, "users", "create", "carol", "--display-name", "Carol").stdout
    access = re.search(r"access key: (\S+)", out).group(1)
    secret = re.search(r"secret key: (\S+)", out).group(1)
    import boto3

    carol = boto3.client("s3", endpoint_url=admin_node.endpoint, region_name="us-east-1",
                         aws_access_key_id=access, aws_secret_access_key=secret)
    carol.create_bucket(Bucket="carols")
    listed = cli_json(admin_node, "users", "list")["users"]
    by_id = {u["id"]: u for u in listed}
    assert by_id["carol"]["access_key"] == access and by_id["carol"]["admin"] is False
    assert by_id["alice"]["admin"] is True and by_id["alice"]["source"] == "config"
    assert all("secret_key" not in u for u in listed)
    assert "carol" in cli(admin_node, "users", "list").stdout
    again = cli(admin_node, "users", "create", "carol", check=False)
    assert again.returncode == 1 and "user_exists" in again.stderr
    # a new key pair: the old one stops working at once, the new one owns what carol owned
    out = cli(admin_node, "users", "rotate", "carol").stdout
    new_access = re.search(r"access key: (\S+)", out).group(1)
    new_secret = re.search(r"secret key: (\S+)", out).group(1)
    assert new_access != access
    with pytest.raises(ClientError) as info:
        carol.list_buckets()
    assert info.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    carol = boto3.client("s3", endpoint_url=admin_node.endpoint, region_name="us-east-1",
                         aws_access_key_id=new_access, aws_secret_access_key=new_secret)
    assert [b["Name"] for b in carol.list_buckets()["Buckets"]] == ["carols"]
    taken = cli(admin_node, "--json", "users", "list").stdout
    assert new_access in taken and access not in taken
    refused = cli(admin_node, "users", "rotate", "alice", check=False)  # from the config file
    assert refused.returncode == 1 and "bad_args" in refused.stderr
    cli(admin_node, "users", "delete", "carol")
    with pytest.raises(ClientError) as info:
        carol.list_buckets()
    assert info.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    gone = cli(admin_node, "users", "delete", "carol", check=False)
    assert gone.returncode == 1 and "no_such_user" in gone.stderr
    refused = cli(admin_node, "users", "list", user=OTHER, check=False)
    assert refused.returncode == 1 and "NotAdministrator" in refused.stderr


def test_bucket_usage_config_and_version(admin_node) -> None:
    s3 = admin_node.client()
    s3.create_bucket(Bucket="used")
    sizes = [0, 1, 5000, 70_000, 300_000]
    for i, size in enumerate(sizes):
        s3.put_object(Bucket="used", Key=f"k{i}", Body=os.urandom(size))
    assert cli_json(admin_node, "usage", "used") == {"bucket": "used", "objects": 5, "bytes": sum(sizes)}
    s3.delete_object(Bucket="used", Key="k4")
    assert cli(admin_node, "usage", "used").stdout.startswith("used: 4 objects")
    assert cli_json(admin_node, "usage", "used")["bytes"] == sum(sizes[:4])
    assert [b["name"] for b in cli_json(admin_node, "buckets")["buckets"]] == ["used"]
    config = cli_json(admin_node, "config")
    assert config["admin_users"] == [ADMIN["id"]]
    assert {u["secret_key"] for u in config["users"]} == {"***"}
    assert ADMIN["secret_key"] not in json.dumps(config)
    assert cli_json(admin_node, "version")["version"]


def test_metrics_move_with_traffic_and_the_access_log(admin_node) -> None:
    s3 = admin_node.client()
    s3.create_bucket(Bucket="counted")
    before = metrics(admin_node)
    for i in range(5):
        s3.put_object(Bucket="counted", Key=f"k{i}", Body=b"x" * 1000)
    for i in range(3):
        assert s3.get_object(Bucket="counted", Key=f"k{i}")["Body"].read() == b"x" * 1000
    with pytest.raises(ClientError):
        s3.get_object(Bucket="counted", Key="missing")
    after = metrics(admin_node)

    def moved(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert moved("trio_sos_s3_requests_total", operation="PutObject", status="200") == 5
    assert moved("trio_sos_s3_requests_total", operation="GetObject", status="200") == 3
    assert moved("trio_sos_s3_requests_total", operation="GetObject", status="404") == 1
    assert moved("trio_sos_s3_request_duration_seconds_count", operation="PutObject") == 5
    assert moved("trio_sos_s3_request_duration_seconds_bucket", operation="PutObject", le="+Inf") == 5
    assert moved("trio_sos_s3_received_bytes_total") >= 5000
    assert moved("trio_sos_s3_sent_bytes_total") >= 3000
    assert moved("trio_sos_metadata_operation_duration_seconds_count", method="put_object") == 5
    assert metric(after, "trio_sos_agent_up") == 1
    assert metric(after, "trio_sos_agent_capacity_bytes") >= 0
    assert metric(after, "trio_sos_info", role="single") == 1
    assert metric(after, "process_resident_memory_bytes") > 0
    assert metric(after, "trio_sos_background_passes_total", worker="gc") >= 1
    labels = {dict(ls).get("operation") for (n, ls) in after if n == "trio_sos_s3_requests_total"}
    assert labels <= {"CreateBucket", "PutObject", "GetObject", "ListBuckets", "HeadBucket", "-"}  # bounded
    log = admin_node.log_path.read_text()
    lines = re.findall(r"trio_sos\.access access id=\S+ remote=\S+ user=alice auth=sigv4 op=PutObject bucket=counted "
                       r"method=PUT path=/counted/k\d status=200 in=1000 out=0 ms=[\d.]+\n", log)
    assert len(lines) == 5, log[-2000:]


def test_metrics_token(node_factory) -> None:
    node = node_factory(**admin_settings(metrics_token="s3cr3t-token"))
    assert http_get(node, "/metrics")[0] == 401
    assert http_get(node, "/metrics", {"Authorization": "Bearer wrong"})[0] == 401
    status, _, body = http_get(node, "/metrics", {"Authorization": "Bearer s3cr3t-token"})
    assert status == 200 and b"trio_sos_info" in body
    assert http_get(node, "/health")[0] == 200  # probes need no token


async def test_scrub_is_started_paused_resumed_cancelled_and_watched(node_factory) -> None:
    # 8 chunks of 64 KiB verified at 128 KiB/s: a pass of about 4 s, long enough to steer
    node = node_factory(**admin_settings(scrub_rate="128K", scrub_interval=3600, inline_max=0))
    s3 = node.client()
    s3.create_bucket(Bucket="scrubbed")
    for i in range(8):
        s3.put_object(Bucket="scrubbed", Key=f"k{i}", Body=os.urandom(64 * 1024))
    async with session(node) as s:
        await s.ok("subscribe", {"topics": ["progress"]})
        started = await s.ok("scrub.start")
        assert started["worker"] == "scrub"

        def scrub(state=None, **more):
            def match(e):
                d = e["data"]
                return (e["event"] == "progress" and d["worker"] == "scrub" and (state is None or d["state"] == state)
                        and all(f(d) for f in more.values()))
            return match

        running = (await s.event(scrub("running", some=lambda d: d["done"] >= 1)))["data"]
        assert running["unit"] == "chunks" and running["left"] is not None and running["left"] < 8
        paused = await s.ok("scrub.pause")
        assert paused["state"] == "paused" and paused["paused"] is True
        held = (await s.ok("scrub.status"))["done"]
        resumed = await s.ok("scrub.resume")
        assert resumed["state"] == "running"
        await s.event(scrub("running", more=lambda d: d["done"] > held))
        cancelled = await s.ok("scrub.cancel")
        assert cancelled["worker"] == "scrub"
        idle = (await s.event(scrub("idle", passes=lambda d: d["passes"] > running["passes"])))["data"]
        assert idle["done"] < 8  # abandoned before the end
    # the CLI runs a whole pass and shows its progress until it ends
    done = cli(node, "scrub", "--watch")
    last = done.stdout.strip().splitlines()[-1]
    assert re.match(r"scrub\s+idle\s+\[#+\] 8 of 8 chunks", last), done.stdout
    status = cli_json(node, "scrub", "status")
    assert status["findings"] == 0 and status["done"] == 8 and status["left"] == 0


async def test_workers_count_into_one_figure_and_send_their_events(node_factory) -> None:
    node = node_factory(**admin_settings(workers=2, slow_request_ms=0))
    s3 = node.client()
    before = metrics(node)
    async with session(node) as s:
        await s.ok("subscribe", {"topics": ["requests", "stats"]})
        s3.create_bucket(Bucket="spread")
        for i in range(20):
            s3.put_object(Bucket="spread", Key=f"k{i}", Body=b"y" * 10)
        event = await s.event(lambda e: e["event"] == "request.slow" and e["data"]["operation"] == "PutObject")
        assert event["data"]["user"] == "alice" and event["data"]["bucket"] == "spread"
        stats = await s.event(lambda e: e["event"] == "stats" and e["data"]["requests_total"] >= 21)
        assert stats["data"]["requests_per_s"] >= 0
    after = metrics(node)
    assert (metric(after, "trio_sos_s3_requests_total", operation="PutObject")
            - metric(before, "trio_sos_s3_requests_total", operation="PutObject")) == 20
    workers = {dict(ls)["worker"] for (n, ls) in after if n == "trio_sos_worker_cpu_seconds_total"}
    assert workers == {"0", "1"}
    assert metric(after, "trio_sos_info", role="supervisor") == 1
    ready = json.loads(http_get(node, "/ready")[2])
    assert ready["workers"] == {"running": 2, "configured": 2}


def test_admin_listener_off_and_in_use(node_factory, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRIO_SOS_ADMIN_LISTEN", "off")  # the node inherits it (the environment beats the file)
    node = node_factory()
    assert node.admin_endpoint == ""
    assert not any("Admin endpoint" in line for line in node.stdout_lines)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    import subprocess
    import sys

    monkeypatch.delenv("TRIO_SOS_ADMIN_LISTEN")
    done = subprocess.run([sys.executable, "-m", "trio_sos", "serve", "--data-dir", str(tmp_path / "d"),
                           "--listen", "127.0.0.1:0", "--workers", "1", "--admin-listen",
                           f"127.0.0.1:{busy.getsockname()[1]}"], capture_output=True, text=True, timeout=60)
    busy.close()
    assert done.returncode == 2 and "setting admin_listen: cannot listen on" in done.stderr, done.stderr


async def test_scrub_findings_reach_subscribers(node_factory) -> None:
    from tests.s3.test_inline import chunk_files

    node = node_factory(**admin_settings(scrub_rate="1G", scrub_interval=3600, inline_max=0, repair_interval=3600))
    node.allow_log(r"is corrupt; reported for repair|chunk .* corrupt|CRC|block .* does not match")
    s3 = node.client()
    s3.create_bucket(Bucket="rotten")
    s3.put_object(Bucket="rotten", Key="k", Body=os.urandom(200_000))
    [path] = chunk_files(node)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x40  # one bit of the first block
    path.write_bytes(bytes(data))
    async with session(node) as s:
        await s.ok("subscribe", {"topics": ["findings"]})

        def read() -> None:  # the only replica's first block is bad: the read is cut, and the reader reports it
            with pytest.raises(Exception):  # noqa: B017  (botocore raises one of several, by where it is cut)
                s3.get_object(Bucket="rotten", Key="k")["Body"].read()

        await trio.to_thread.run_sync(read)
        by_reader = await s.event(lambda e: e["event"] == "finding" and e["data"]["worker"] == "read")
        assert by_reader["data"]["chunk"] == path.name
        await s.ok("scrub.start")
        finding = await s.event(lambda e: e["event"] == "finding" and e["data"]["worker"] == "scrub")
        assert finding["data"]["worker"] == "scrub" and finding["data"]["reason"] == "corrupt"
        assert finding["data"]["chunk"] == path.name  # chunk files are named by the chunk id in hex
        assert (await s.ok("scrub.status"))["findings"] == 1
    samples = metrics(node)
    assert metric(samples, "trio_sos_scrub_findings_total", reason="corrupt") == 1


async def test_every_operation_over_a_raw_session(admin_node) -> None:
    s3 = admin_node.client()
    s3.create_bucket(Bucket="raw")
    s3.put_object(Bucket="raw", Key="k", Body=b"12345")
    async with session(admin_node) as s:
        assert (await s.ok("version"))["version"]
        assert (await s.ok("config"))["listen"]
        status = await s.ok("status")
        assert status["node"]["mode"] == "embedded" and len(status["agents"]) == 1
        [agent] = (await s.ok("agents.list"))["agents"]
        assert agent["state"] == "active" and agent["id"] == status["agents"][0]["id"]
        for verb in ("drain", "undrain", "remove"):  # one local agent: nothing to steer
            reply = await s.call(f"agents.{verb}", {"agent": agent["id"]})
            assert reply["error"]["code"] == "not_cluster"
        for worker in ("gc", "repair", "scrub", "lifecycle"):
            for action in ("status", "pause", "resume", "start", "cancel"):
                p = await s.ok(f"{worker}.{action}")
                assert p["worker"] == worker and p["unit"] == ("versions" if worker == "lifecycle" else "chunks")
                assert p["paused"] is (action == "pause")
        assert [b["name"] for b in (await s.ok("buckets.list"))["buckets"]] == ["raw"]
        assert await s.ok("buckets.usage", {"bucket": "raw"}) == {"bucket": "raw", "objects": 1, "bytes": 5}
        created = await s.ok("users.create", {"id": "dave", "secret_key": "dave-secret-key"})
        assert created["secret_key"] == "dave-secret-key" and created["admin"] is False
        assert "dave" in {u["id"] for u in (await s.ok("users.list"))["users"]}
        assert (await s.call("users.create", {"id": "dave2", "secret_key": "short"}))["error"]["code"] == "bad_args"
        assert (await s.call("users.delete", {"id": "alice"}))["error"]["code"] == "bad_args"  # from the config
        assert await s.ok("users.delete", {"id": "dave"}) == {"id": "dave", "deleted": True}
        assert (await s.ok("subscribe", {"topics": ["agents", "stats"]}))["topics"] == ["agents", "stats"]
        assert (await s.ok("unsubscribe", {"topics": ["stats"]}))["topics"] == ["agents"]
        assert (await s.ok("unsubscribe", {"topics": ["*"]}))["topics"] == []
    assert "gc" in cli(admin_node, "gc").stdout


def test_admin_listener_with_tls(node_factory, tmp_path) -> None:
    from tests.procs import make_certificate

    crt, key = make_certificate(tmp_path)
    node = node_factory(**admin_settings(tls_cert=str(crt), tls_key=str(key)))
    assert node.admin_endpoint.startswith("https://127.0.0.1:")
    status = cli_json(node, "--cafile", str(crt), "status")
    assert status["node"]["admin"] == node.admin_endpoint
    refused = cli(node, "status", check=False)  # the certificate is not trusted without --cafile
    assert refused.returncode == 1
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=str(crt))
    with urllib.request.urlopen(node.admin_endpoint + "/health", context=context, timeout=30) as response:
        assert response.read() == b"ok\n"


def test_ready_follows_the_agent(admin_node) -> None:
    import signal

    from tests.cluster.test_cluster import wait_for

    admin_node.allow_log(r"agent \S+ unhealthy|agent .* (unreachable|did not answer|timed out)|health check")
    agent = admin_node.agent_pid()
    os.kill(agent, signal.SIGSTOP)  # the local agent stops answering (its supervisor may restart it: fine too)
    try:
        def not_ready() -> bool:
            status, _, body = http_get(admin_node, "/ready")
            return status == 503 and json.loads(body)["agents"]["writable_healthy"] == 0

        wait_for(not_ready, what="/ready to say 503 while the agent does not answer")
        assert http_get(admin_node, "/health")[0] == 200  # alive all the same
    finally:
        os.kill(agent, signal.SIGCONT)
    wait_for(lambda: http_get(admin_node, "/ready")[0] == 200, what="/ready to come back")


def test_watch_prints_events_as_they_come(node_factory) -> None:
    import select
    import subprocess
    import sys

    from tests.admin.helpers import ADMIN

    node = node_factory(**admin_settings(slow_request_ms=0))
    proc = subprocess.Popen([sys.executable, "-m", "trio_sos", "admin", "--endpoint", node.admin_endpoint,
                             "--access-key", ADMIN["access_key"], "--secret-key", ADMIN["secret_key"], "--json",
                             "watch", "requests"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        s3 = node.client()
        deadline = time.monotonic() + 60
        out = b""
        while b'"request.slow"' not in out:  # the watcher subscribes once connected: keep making requests
            assert time.monotonic() < deadline and proc.poll() is None, (out, proc.stderr.read())
            s3.list_buckets()
            if select.select([proc.stdout], [], [], 0.2)[0]:
                out += os.read(proc.stdout.fileno(), 65536)
        event = json.loads(next(line for line in out.splitlines() if b'"request.slow"' in line))
        assert event["data"]["operation"] == "ListBuckets" and event["data"]["user"] == "alice"
    finally:
        proc.terminate()
        proc.wait(30)
