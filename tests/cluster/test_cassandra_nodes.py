"""Many nodes, one cluster: S3 nodes sharing one real Cassandra (the metadata) and one ZooKeeper (the agents), and
interchangeable — a client may send each request to another node."""

from __future__ import annotations

import json
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

KEYSPACE = "trio_sos_nodes"  # shared by the tests of this module; each uses bucket names of its own


def fresh(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def nodes(cassandra_session, cluster_factory, node_factory, zookeeper, cluster_name):
    """Two nodes on one Cassandra and one ZooKeeper, with two agents of the cluster (R = 2); one at QUORUM, the
    other at LOCAL_QUORUM in its datacenter."""
    cluster_factory("a1", zone="z1").agent_id()
    cluster_factory("a2", zone="z2").agent_id()
    settings, _ = cassandra_session
    common = dict(zk=zookeeper.hosts, cluster=cluster_name, zk_session_timeout=2, replicas=2,
                  cassandra=settings.hosts[0], cassandra_keyspace=KEYSPACE,
                  cassandra_replication="{'class': 'SimpleStrategy', 'replication_factor': 1}")
    common["admin_users"] = ["alice"]  # TEST_USERS[0]: the admin tests below use her key
    one = node_factory("n1", **common)
    # the other node asks the local datacenter first, at LOCAL_QUORUM (SimpleSnitch's one datacenter)
    two = node_factory("n2", **common, cassandra_local_dc="datacenter1", cassandra_consistency="LOCAL_QUORUM")
    return one, two


def test_read_and_list_after_write_across_nodes(nodes, cassandra_session) -> None:
    one, two = nodes
    a, b = one.client(), two.client()
    bucket = fresh("raw")
    a.create_bucket(Bucket=bucket)
    # the metadata is in Cassandra, not in a file of either node
    _, session = cassandra_session
    assert list(session.execute(f"SELECT name FROM {KEYSPACE}.buckets WHERE name = %s", (bucket,)))
    assert not list(one.data_dir.glob("*.sqlite3")) and not list(two.data_dir.glob("*.sqlite3"))
    b.head_bucket(Bucket=bucket)  # the bucket made through node 1 is there through node 2 at once
    bodies = {f"dir{i % 3}/k{i}": os.urandom(100 + i * 1000) for i in range(30)}  # inline and chunked bodies
    for i, (key, body) in enumerate(bodies.items()):
        writer, reader = (a, b) if i % 2 == 0 else (b, a)
        writer.put_object(Bucket=bucket, Key=key, Body=body)
        assert reader.get_object(Bucket=bucket, Key=key)["Body"].read() == body  # read after write
        listed = [o["Key"] for o in reader.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]]
        assert listed == [key]  # list after write
    for client in (a, b):
        page = client.list_objects_v2(Bucket=bucket, Delimiter="/")
        assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["dir0/", "dir1/", "dir2/"]
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, MaxKeys=1000)["Contents"]]
        assert keys == sorted(bodies)
    # overwrite through one node, delete through the other: both see the latest at once
    a.put_object(Bucket=bucket, Key="dir0/k0", Body=b"second")
    assert b.get_object(Bucket=bucket, Key="dir0/k0")["Body"].read() == b"second"
    b.delete_object(Bucket=bucket, Key="dir0/k0")
    with pytest.raises(ClientError) as err:
        a.get_object(Bucket=bucket, Key="dir0/k0")
    assert err.value.response["Error"]["Code"] == "NoSuchKey"
    assert "dir0/k0" not in [o["Key"] for o in a.list_objects_v2(Bucket=bucket)["Contents"]]


def _race(calls) -> list:
    """Run the calls at the same moment (a barrier), each in its own thread; their outcomes: a response or the
    ClientError it raised."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        try:
            return call()
        except ClientError as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_create_bucket_race_across_nodes_has_one_winner(nodes) -> None:
    one, two = nodes
    alice, bob = one.client(0), two.client(1)
    for _ in range(5):
        name = fresh("race")
        outcomes = _race([lambda n=name: alice.create_bucket(Bucket=n),
                          lambda n=name: bob.create_bucket(Bucket=n)])
        won = [o for o in outcomes if not isinstance(o, ClientError)]
        lost = [o for o in outcomes if isinstance(o, ClientError)]
        assert len(won) == 1 and len(lost) == 1, outcomes
        assert lost[0].response["Error"]["Code"] == "BucketAlreadyExists"
        winner = alice if outcomes[0] is won[0] else bob
        winner.delete_bucket(Bucket=name)


def test_if_none_match_race_across_nodes_has_one_winner(nodes) -> None:
    one, two = nodes
    a, b = one.client(), two.client()
    bucket = fresh("inm")
    a.create_bucket(Bucket=bucket)
    for i in range(5):
        key = f"once-{i}"
        bodies = [os.urandom(64) for _ in range(4)]
        clients = [a, b, a, b]
        outcomes = _race([lambda c=c, body=body, k=key: c.put_object(Bucket=bucket, Key=k, Body=body,
                                                                      IfNoneMatch="*")
                          for c, body in zip(clients, bodies, strict=True)])
        won = [i for i, o in enumerate(outcomes) if not isinstance(o, ClientError)]
        assert len(won) == 1, outcomes
        for o in outcomes:
            if isinstance(o, ClientError):
                assert o.response["ResponseMetadata"]["HTTPStatusCode"] in (409, 412), o.response
        for c in (a, b):  # the winner's body, through both nodes
            assert c.get_object(Bucket=bucket, Key=key)["Body"].read() == bodies[won[0]]


def test_a_versioned_key_written_from_both_nodes_at_once_keeps_every_version_in_order(nodes) -> None:
    """Writes and deletes of one key of a versioned bucket raced through both nodes: every write is a version of
    its own, listed once, newest first in the order the writes committed; exactly one is the latest, the same
    through either node; each old version reads back its own body."""
    import hashlib

    one, two = nodes
    a, b = one.client(), two.client()
    bucket = fresh("vhot")
    a.create_bucket(Bucket=bucket)
    b.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    bodies = [os.urandom(1500 + i) for i in range(10)]
    calls = [lambda c=c, body=body: c.put_object(Bucket=bucket, Key="hot", Body=body)
             for c, body in zip([a, b] * 5, bodies, strict=True)]
    calls += [lambda c=c: c.delete_object(Bucket=bucket, Key="hot") for c in (a, b)]
    outcomes = _race(calls)
    assert not [o for o in outcomes if isinstance(o, ClientError)], outcomes
    written = {o["VersionId"]: o for o in outcomes}
    assert len(written) == 12  # every write and delete its own version id
    for c in (a, b):
        listed = c.list_object_versions(Bucket=bucket)
        entries = [(v["VersionId"], v["IsLatest"], v["LastModified"]) for v in listed.get("Versions", [])]
        entries += [(d["VersionId"], d["IsLatest"], d["LastModified"]) for d in listed.get("DeleteMarkers", [])]
        assert sorted(e[0] for e in entries) == sorted(written)
        assert sum(e[1] for e in entries) == 1
    for vid, outcome in written.items():
        if outcome.get("DeleteMarker"):
            continue
        got = b.get_object(Bucket=bucket, Key="hot", VersionId=vid)["Body"].read()
        assert hashlib.md5(got).hexdigest() == outcome["ETag"].strip('"')
    # newest first: the listing's order is the order of the ids (which carry the commit order), the latest is the
    # newest, and both nodes list alike
    for c in (a, b):
        listed = c.list_object_versions(Bucket=bucket)
        versions = [v["VersionId"] for v in listed.get("Versions", [])]
        assert versions == sorted(versions)
        latest = [e["VersionId"] for e in listed.get("Versions", []) + listed.get("DeleteMarkers", [])
                  if e["IsLatest"]]
        assert latest == [min(written)]


def test_concurrent_writes_of_one_key_from_both_nodes_leave_one_latest(nodes) -> None:
    one, two = nodes
    a, b = one.client(), two.client()
    bucket = fresh("hot")
    a.create_bucket(Bucket=bucket)
    bodies = [os.urandom(2000 + i) for i in range(12)]
    clients = [a, b] * 6
    outcomes = _race([lambda c=c, body=body: c.put_object(Bucket=bucket, Key="hot", Body=body)
                      for c, body in zip(clients, bodies, strict=True)])
    assert not [o for o in outcomes if isinstance(o, ClientError)]
    latest = a.get_object(Bucket=bucket, Key="hot")["Body"].read()
    assert latest in bodies
    assert b.get_object(Bucket=bucket, Key="hot")["Body"].read() == latest
    for c in (a, b):  # listed once, with the latest one's size and ETag
        (entry,) = c.list_objects_v2(Bucket=bucket)["Contents"]
        assert entry["Size"] == len(latest)
        assert entry["ETag"] == a.head_object(Bucket=bucket, Key="hot")["ETag"]


def test_node_with_cassandra_password_authentication(tmp_path, node_factory) -> None:
    """A Cassandra that requires a login: the node logs in with cassandra_username/password; a wrong password is
    one clear line at start, not a node that serves errors."""
    from tests.procs import CassandraProcess, cassandra_home, cassandra_required

    home = cassandra_home()
    if home is None:
        if cassandra_required():
            pytest.fail("Cassandra is not fetched")
        pytest.skip("Cassandra is not fetched (bash scripts/fetch-cassandra.sh)")
    server = CassandraProcess(tmp_path / "cass-auth", home, extra_yaml="authenticator: PasswordAuthenticator\n",
                              auth=("cassandra", "cassandra"))
    server.start()
    try:
        node = node_factory("n-auth", cassandra=server.contact, cassandra_keyspace="authed",
                            cassandra_replication="{'class': 'SimpleStrategy', 'replication_factor': 1}",
                            cassandra_username="cassandra", cassandra_password="cassandra")
        s3 = node.client()
        s3.create_bucket(Bucket="authed")
        s3.put_object(Bucket="authed", Key="k", Body=b"behind a login")
        assert s3.get_object(Bucket="authed", Key="k")["Body"].read() == b"behind a login"
        node.stop()
        import subprocess
        import sys

        done = subprocess.run([sys.executable, "-m", "trio_sos", "serve", "--cassandra", server.contact,
                               "--data-dir", str(tmp_path / "d"), "--workers", "1", "--listen", "127.0.0.1:0"],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "TRIO_SOS_CASSANDRA_USERNAME": "cassandra",
                                   "TRIO_SOS_CASSANDRA_PASSWORD": "wrong"})
        assert done.returncode == 1
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("trio_sos: cannot reach Cassandra") and "auth" in last.lower(), last
    finally:
        server.stop()


def test_node_with_cassandra_over_tls(tmp_path, node_factory) -> None:
    """A Cassandra that only speaks TLS to clients: the node connects with cassandra_tls_ca and verifies the
    server's certificate; without the CA it does not start (one clear line)."""
    from tests.procs import CassandraProcess, cassandra_home, cassandra_required, make_certificate

    home = cassandra_home()
    if home is None:
        if cassandra_required():
            pytest.fail("Cassandra is not fetched")
        pytest.skip("Cassandra is not fetched (bash scripts/fetch-cassandra.sh)")
    (tmp_path / "tls").mkdir()
    crt, key = make_certificate(tmp_path / "tls")
    pem = tmp_path / "tls" / "keystore.pem"  # Cassandra's PEM keystore: the private key, then the certificate
    pem.write_text(key.read_text() + crt.read_text())
    yaml = ("client_encryption_options:\n  enabled: true\n  optional: false\n  ssl_context_factory:\n"
            "    class_name: org.apache.cassandra.security.PEMBasedSslContextFactory\n"
            f"  keystore: {pem}\n")
    server = CassandraProcess(tmp_path / "cass-tls", home, extra_yaml=yaml, tls_ca=str(crt))
    server.start()
    try:
        node = node_factory("n-tls", cassandra=server.contact, cassandra_keyspace="tls",
                            cassandra_replication="{'class': 'SimpleStrategy', 'replication_factor': 1}",
                            cassandra_tls_ca=str(crt))
        s3 = node.client()
        s3.create_bucket(Bucket="over-tls")
        s3.put_object(Bucket="over-tls", Key="k", Body=b"encrypted on the way to the metadata")
        assert s3.get_object(Bucket="over-tls", Key="k")["Body"].read() == b"encrypted on the way to the metadata"
        node.stop()  # before its Cassandra
        import subprocess
        import sys

        done = subprocess.run([sys.executable, "-m", "trio_sos", "serve", "--cassandra", server.contact,
                               "--data-dir", str(tmp_path / "d"), "--workers", "1", "--listen", "127.0.0.1:0"],
                              capture_output=True, text=True, timeout=90)
        assert done.returncode == 1
        assert done.stderr.strip().splitlines()[-1].startswith("trio_sos: cannot reach Cassandra"), done.stderr[-500:]
    finally:
        server.stop()


def test_multipart_upload_spread_over_both_nodes(nodes) -> None:
    """Create on one node, parts through both, list and complete on the other: the upload's state is shared."""
    one, two = nodes
    a, b = one.client(), two.client()
    bucket = fresh("mpu")
    a.create_bucket(Bucket=bucket)
    upload = a.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    assert [u["UploadId"] for u in b.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [upload]
    parts = [os.urandom(5 << 20) for _ in range(3)] + [os.urandom(1000)]
    etags = []
    for n, body in enumerate(parts, 1):
        client = a if n % 2 else b
        etags.append(client.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=n, Body=body)["ETag"])
    listed = a.list_parts(Bucket=bucket, Key="big", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["ETag"]) for p in listed] == list(enumerate(etags, 1))
    b.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    assert a.get_object(Bucket=bucket, Key="big")["Body"].read() == b"".join(parts)
    assert b.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    # a copy through one node, read through the other
    a.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "big"})
    assert b.get_object(Bucket=bucket, Key="copy", Range="bytes=0-99")["Body"].read() == parts[0][:100]


def test_the_admin_interface_on_cassandra_metadata(nodes) -> None:
    """Users made through one node's admin interface work on the other; usage and status from either node."""
    import re

    from tests.admin.helpers import cli, cli_json

    one, two = nodes
    out = cli(one, "users", "create", fresh("erin")).stdout
    user_id = re.search(r"user (\S+)", out).group(1)
    access = re.search(r"access key: (\S+)", out).group(1)
    secret = re.search(r"secret key: (\S+)", out).group(1)
    import boto3

    erin = boto3.client("s3", endpoint_url=two.endpoint, region_name="us-east-1", aws_access_key_id=access,
                        aws_secret_access_key=secret)
    bucket = fresh("usage")
    erin.create_bucket(Bucket=bucket)
    for i in range(3):
        erin.put_object(Bucket=bucket, Key=f"k{i}", Body=os.urandom(1000 * (i + 1)))
    for node in nodes:
        assert cli_json(node, "usage", bucket) == {"bucket": bucket, "objects": 3, "bytes": 6000}
        status = cli_json(node, "status")
        assert status["node"]["mode"] == "cluster" and len(status["agents"]) == 2
    assert user_id in {u["id"] for u in cli_json(two, "users", "list")["users"]}
    rotated = cli_json(one, "users", "rotate", user_id)  # through one node; the other sees it at once
    with pytest.raises(ClientError) as info:
        erin.list_buckets()
    assert info.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    erin = boto3.client("s3", endpoint_url=two.endpoint, region_name="us-east-1",
                        aws_access_key_id=rotated["access_key"], aws_secret_access_key=rotated["secret_key"])
    assert bucket in [b["Name"] for b in erin.list_buckets()["Buckets"]]
    access, secret = rotated["access_key"], rotated["secret_key"]
    cli(two, "users", "delete", user_id)
    with pytest.raises(ClientError) as info:
        boto3.client("s3", endpoint_url=one.endpoint, region_name="us-east-1", aws_access_key_id=access,
                     aws_secret_access_key=secret).list_buckets()
    assert info.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_iam_users_keys_and_policies_across_nodes(nodes) -> None:
    """IAM through one node, in force on the other at once (Cassandra metadata): a new user's key, its user policy,
    the key made Inactive, then deleted."""
    import boto3

    one, two = nodes
    u = one.users[0]
    iam = boto3.client("iam", endpoint_url=one.endpoint, region_name="us-east-1", aws_access_key_id=u["access_key"],
                       aws_secret_access_key=u["secret_key"])
    name = fresh("iamuser")
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    user = boto3.client("s3", endpoint_url=two.endpoint, region_name="us-east-1",
                        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
    bucket = fresh("iam")
    user.create_bucket(Bucket=bucket)
    user.put_object(Bucket=bucket, Key="k", Body=b"v")
    iam.put_user_policy(UserName=name, PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject",
                                                "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    assert user.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    with pytest.raises(ClientError) as info:
        user.put_object(Bucket=bucket, Key="k2", Body=b"v")
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    two_iam = boto3.client("iam", endpoint_url=two.endpoint, region_name="us-east-1",
                           aws_access_key_id=u["access_key"], aws_secret_access_key=u["secret_key"])
    assert two_iam.list_user_policies(UserName=name)["PolicyNames"] == ["read"]
    iam.update_access_key(UserName=name, AccessKeyId=key["AccessKeyId"], Status="Inactive")
    with pytest.raises(ClientError) as info:
        user.get_object(Bucket=bucket, Key="k")
    assert info.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    assert [k["Status"] for k in two_iam.list_access_keys(UserName=name)["AccessKeyMetadata"]] == ["Inactive"]
    two_iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
    assert iam.list_access_keys(UserName=name)["AccessKeyMetadata"] == []
