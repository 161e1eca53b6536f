"""A local S3 (moto server, authentication on) and the direct listing a verify is compared with.

moto lets the first INITIAL_NO_AUTH_ACTION_COUNT requests through unsigned-checked; we spend them on IAM
create_user, put_user_policy and create_access_key (as PROVIDERS.md §4 describes), then make one bucket
with the new key. Readiness is probed with a bare TCP connect so the probe spends none of those requests.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.procs import ROOT, Server, clean_env, free_port, spawn, wait_until

MOTO = ROOT / ".venv" / "bin" / "moto_server"
BUCKET = "bench-bucket"
POLICY = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'


@dataclass(frozen=True)
class S3:
    """A running local S3 and a key pair it accepts."""

    server: Server
    endpoint: str
    access_key_id: str
    secret_access_key: str

    def provider(self) -> dict[str, Any]:
        """The credential's provider object for `cloudsync.credentials.verify`."""
        return {
            "type": "S3",
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "endpoint": self.endpoint,
        }


def _client(service: str, endpoint: str, key: str, secret: str) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def _provision(endpoint: str) -> tuple[str, str]:
    iam = _client("iam", endpoint, "bootstrap", "bootstrap")
    iam.create_user(UserName="bench")
    iam.put_user_policy(UserName="bench", PolicyName="all", PolicyDocument=POLICY)
    key = iam.create_access_key(UserName="bench")["AccessKey"]
    _client("s3", endpoint, key["AccessKeyId"], key["SecretAccessKey"]).create_bucket(Bucket=BUCKET)
    return key["AccessKeyId"], key["SecretAccessKey"]


async def start_s3() -> S3:
    """moto server with authentication on, a user with full rights and one bucket."""
    begin = time.perf_counter()
    port = free_port()
    process = await spawn(
        str(MOTO), "-H", "127.0.0.1", "-p", str(port), env=clean_env(INITIAL_NO_AUTH_ACTION_COUNT="4")
    )

    async def listening() -> bool:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
        return True

    await wait_until(listening, 30, "moto server", process)
    endpoint = f"http://127.0.0.1:{port}"
    key_id, secret = await asyncio.to_thread(_provision, endpoint)
    server = Server("moto", process, endpoint, time.perf_counter() - begin)
    return S3(server, endpoint, key_id, secret)


def _direct_listing_ms(s3: S3, calls: int) -> list[float]:
    client = _client("s3", s3.endpoint, s3.access_key_id, s3.secret_access_key)
    client.list_buckets()  # connection set-up and boto's lazy loading stay out of the figures
    timings = []
    for _ in range(calls):
        begin = time.perf_counter()
        client.list_buckets()
        timings.append((time.perf_counter() - begin) * 1e3)
    return timings


async def direct_listing_ms(s3: S3, calls: int) -> float:
    """Median milliseconds of a direct ListBuckets (the request a root verify makes) with boto3."""
    return statistics.median(await asyncio.to_thread(_direct_listing_ms, s3, calls))
