"""S3: moto's server with request signing enforced.

moto checks signatures only after INITIAL_NO_AUTH_ACTION_COUNT unauthenticated calls; we spend them on
creating an IAM user with an allow-all policy and an access key, then use that key for everything else.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import ServerInfo, frozen
from .process import HOST, VENV_BIN, ServerProcess, on_free_port, require_module, require_program, running

BUCKET = "mwcc-test-bucket"
OBJECT_KEY = "hello.txt"
OBJECT_BODY = b"hello from moto\n"
REGION = "us-east-1"
_ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


@dataclass(frozen=True, kw_only=True)
class S3Server(ServerInfo):
    """moto S3 with auth on: a bucket holding one object."""

    endpoint: str
    access_key_id: str
    secret_access_key: str
    bucket: str
    object_key: str


def _client(service: str, endpoint: str, key_id: str, secret: str) -> Any:
    import boto3  # moto's own dependency; imported late so a missing moto skips instead of erroring

    return boto3.session.Session().client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )


def _provision(endpoint: str) -> tuple[str, str]:
    """Spend moto's unauthenticated calls on an IAM user and key; return (key id, secret)."""
    # Any key works while moto still lets calls through unauthenticated.
    iam = _client("iam", endpoint, "bootstrap", "bootstrap")
    user = "mwcc-test"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="allow-all", PolicyDocument=json.dumps(_ALLOW_ALL))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    key_id, secret = str(key["AccessKeyId"]), str(key["SecretAccessKey"])
    s3 = _client("s3", endpoint, key_id, secret)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=OBJECT_KEY, Body=OBJECT_BODY)
    return key_id, secret


@contextmanager
def running_s3(workdir: Path) -> Iterator[S3Server]:
    """Run moto_server on a free port with auth enforced, and provision a user, key, bucket and object."""
    moto = require_program(VENV_BIN / "moto_server", "moto_server (pip moto[server])")
    require_module("boto3")
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": "4", "MOTO_ALLOW_NONEXISTENT_REGION": "true"}

    def start(port: int) -> AbstractContextManager[ServerProcess]:
        return running(
            "moto_server", [moto, "-H", HOST, "-p", str(port)], workdir / "moto.log", port, env=env
        )

    with on_free_port(start) as server:
        port = server.port
        endpoint = f"http://{HOST}:{port}"
        key_id, secret = _provision(endpoint)
        yield S3Server(
            provider="S3",
            host=HOST,
            port=port,
            attributes=frozen({"access_key_id": key_id, "secret_access_key": secret, "endpoint": endpoint}),
            secret_attribute="secret_access_key",
            wrong_secret=secrets.token_urlsafe(30)[:40],
            endpoint=endpoint,
            access_key_id=key_id,
            secret_access_key=secret,
            bucket=BUCKET,
            object_key=OBJECT_KEY,
        )
