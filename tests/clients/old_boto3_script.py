"""Run by tests/clients/test_old_boto3.py with boto3 1.34 (its own venv): the same calls an application makes."""

import hashlib
import io
import os
import sys
import urllib.request

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

endpoint, access_key, secret_key = sys.argv[1:4]
assert boto3.__version__.startswith("1.34."), boto3.__version__
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=access_key,
                  aws_secret_access_key=secret_key, config=Config(s3={"addressing_style": "path"}))
s3.create_bucket(Bucket="old-boto")
s3.put_object(Bucket="old-boto", Key="a/small.txt", Body=b"small", Metadata={"k": "v"})
body = os.urandom(12 << 20)
s3.upload_fileobj(io.BytesIO(body), "old-boto", "a/big.bin", Config=TransferConfig(multipart_threshold=5 << 20,
                                                                                    multipart_chunksize=5 << 20))
got = s3.get_object(Bucket="old-boto", Key="a/big.bin")["Body"].read()
assert hashlib.md5(got).digest() == hashlib.md5(body).digest()
assert s3.get_object(Bucket="old-boto", Key="a/big.bin", Range="bytes=5-9")["Body"].read() == body[5:10]
assert s3.head_object(Bucket="old-boto", Key="a/small.txt")["Metadata"] == {"k": "v"}
listed = s3.list_objects_v2(Bucket="old-boto", Prefix="a/", Delimiter="/")
assert sorted(o["Key"] for o in listed["Contents"]) == ["a/big.bin", "a/small.txt"]
s3.copy_object(Bucket="old-boto", Key="b/copy.txt", CopySource={"Bucket": "old-boto", "Key": "a/small.txt"})
url = s3.generate_presigned_url("get_object", Params={"Bucket": "old-boto", "Key": "b/copy.txt"}, ExpiresIn=60)
with urllib.request.urlopen(url, timeout=10) as resp:
    assert resp.read() == b"small"
s3.delete_objects(Bucket="old-boto", Delete={"Objects": [{"Key": k} for k in ["a/big.bin", "a/small.txt",
                                                                              "b/copy.txt"]]})
s3.delete_bucket(Bucket="old-boto")
print("old boto3 OK", boto3.__version__)
