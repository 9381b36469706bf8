"""A 500 is a bug or a broken disk, never a stranger's doing — and when one happens, the operator finds it: one
access-log line with its request id, like every request, and the traceback with the same id."""

from __future__ import annotations

import os
import re

import pytest
from botocore.exceptions import ClientError


def test_a_500_has_its_access_log_line_and_request_id(node) -> None:
    s3 = node.client()
    s3.create_bucket(Bucket="broken")
    s3.put_object(Bucket="broken", Key="k", Body=b"x")
    # The metadata file's pages turned to garbage under the running node (a disk gone bad): a real internal error.
    for name in ("meta.sqlite3", "meta.sqlite3-wal", "meta.sqlite3-shm"):
        path = node.data_dir / name
        if path.exists():
            with open(path, "r+b") as f:
                f.write(os.urandom(min(4096, path.stat().st_size)))
    node.allow_log(r"failed with an internal error|Traceback|garbage collection pass failed")
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="broken", Key="k")
    error = info.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert error["Error"]["Code"] == "InternalError"
    request_id = error["ResponseMetadata"]["RequestId"]
    log = node.log_path.read_text()
    assert re.search(rf"ERROR trio_sos\.s3 request {request_id} GetObject GET /broken/k failed with an internal error",
                     log), log[-3000:]
    # the access log's line of that request: one line per request, with its id, user, operation, status
    assert re.search(rf"INFO trio_sos\.access access id={request_id} remote=127\.0\.0\.1:\d+ user=alice auth=sigv4 "
                     rf"op=GetObject bucket=broken method=GET path=/broken/k status=500 in=0 out=\d+ ms=", log), \
        log[-3000:]
