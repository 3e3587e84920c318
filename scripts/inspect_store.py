#!/usr/bin/env python3
"""Lists a bucket or container with the vendors' own SDKs, independently of tidemark.

    $TIDEMARK_TEST_PYTHON scripts/inspect_store.py s3 BUCKET PREFIX
    $TIDEMARK_TEST_PYTHON scripts/inspect_store.py azure CONTAINER PREFIX

Every object under PREFIX, a directory ("dr/site" and "dr/site/" both mean the keys
starting with "dr/site/"; "" means the whole bucket), is printed as one JSON document
on stdout,

    {"objects": [{"key": KEY, "size": N, "head_hex": HEX, "tail_hex": HEX}, ...]}

sorted by key, KEY relative to PREFIX, HEX the first and the last 8 bytes (the whole
object when it is shorter). S3 uses TIDEMARK_TEST_S3_ENDPOINT and the AWS_* variables;
Azure uses TIDEMARK_TEST_AZURE_CONNECTION_STRING (scripts/test-servers.sh sets them).
Exits 2 on bad usage, 1 on any other error, with one line on stderr.
"""

import json
import os
import sys

EDGE = 8


class Failure(Exception):
    pass


def env(name):
    value = os.environ.get(name)
    if not value:
        raise Failure(f"{name} is not set (run under scripts/with-test-servers.sh)")
    return value


def edges(size, read):
    """head and tail hex; read(offset, length) returns those bytes."""
    if size == 0:
        return "", ""
    if size <= 2 * EDGE:
        data = read(0, size)
        if len(data) != size:
            raise Failure(f"read {len(data)} bytes of a {size}-byte object")
        return data[:EDGE].hex(), data[-EDGE:].hex()
    head = read(0, EDGE)
    tail = read(size - EDGE, EDGE)
    if len(head) != EDGE or len(tail) != EDGE:
        raise Failure(f"short ranged read of a {size}-byte object")
    return head.hex(), tail.hex()


def list_s3(bucket, prefix):
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=env("TIDEMARK_TEST_S3_ENDPOINT"),
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]

            def read(offset, length, key=key):
                body = client.get_object(
                    Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}"
                )["Body"]
                return body.read()

            objects.append(entry(prefix, key, item["Size"], read))
    return objects


def list_azure(container, prefix):
    from azure.storage.blob import ContainerClient

    client = ContainerClient.from_connection_string(
        env("TIDEMARK_TEST_AZURE_CONNECTION_STRING"), container
    )
    objects = []
    for blob in client.list_blobs(name_starts_with=prefix or None):
        name = blob.name

        def read(offset, length, name=name):
            return client.download_blob(name, offset=offset, length=length).readall()

        objects.append(entry(prefix, name, blob.size, read))
    return objects


def entry(prefix, key, size, read):
    try:
        head, tail = edges(size, read)
    except Failure as e:
        raise Failure(f"{key}: {e}") from None
    return {"key": key[len(prefix):], "size": size, "head_hex": head, "tail_hex": tail}


def main(argv):
    if len(argv) != 4 or argv[1] not in ("s3", "azure"):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    backend, where, prefix = argv[1:]
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    try:
        objects = (list_s3 if backend == "s3" else list_azure)(where, prefix)
    except Failure as e:
        print(f"inspect_store: {backend} {where}: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # the SDKs' errors: missing bucket, refused connection, ...
        # Azure's messages go on with request ids and the XML body: keep the first line.
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        message = lines[0] if lines else repr(e)
        print(f"inspect_store: {backend} {where}: {type(e).__name__}: {message}", file=sys.stderr)
        return 1
    objects.sort(key=lambda o: o["key"])
    json.dump({"objects": objects}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
