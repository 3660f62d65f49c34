"""The AWS variables of the tests' local S3 server (moto accepts any key pair; these only sign requests)."""

S3_ENV = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_DEFAULT_REGION": "us-east-1"}
