"""The tests' local S3 server: its AWS variables (moto accepts any key pair; these only sign requests) and a
reader of everything an ``s3://`` workspace holds."""

S3_ENV = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_DEFAULT_REGION": "us-east-1"}


def bucket_objects(url: str) -> dict[str, bytes]:
    """{key relative to the workspace prefix: bytes} of every object of an s3:// workspace."""
    import boto3

    bucket, _, prefix = url[len("s3://"):].partition("/")
    client = boto3.client("s3")
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
            for o in page.get("Contents", [])]
    return {k[len(prefix) + 1:]: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}
