"""Error texts: secret scrubbing, excerpts and reason keys (table-driven, from rclone's real messages)."""

from __future__ import annotations

import pytest

from middlewared_cc.providers.obscure import obscure
from middlewared_cc.rclone.scrub import MASK, classify, excerpt, scrub, secret_values

# Messages seen from rcd 1.75.2 against the local test servers (ports and ids shortened).
OBSERVED = [
    (
        (
            "error in ListJSON: operation error S3: ListBuckets, https response error StatusCode: 403, RequestID: X,"
            " api error SignatureDoesNotMatch: The request signature we calculated does not match"
        ),
        "invalid_auth",
    ),
    (
        (
            "error in ListJSON: operation error S3: ListBuckets, exceeded maximum number of attempts, 1, request send"
            ' failed, Get "http://127.0.0.1:1/?x-id=ListBuckets": dial tcp 127.0.0.1:1: connect: connection refused'
        ),
        "cannot_connect",
    ),
    (
        'NewFs: failed to make FTP connection to "127.0.0.1:40301": 530 "Authentication failed."',
        "invalid_auth",
    ),
    (
        'NewFs: failed to make FTP connection to "127.0.0.1:1": dial tcp 127.0.0.1:1: connect: connection refused',
        "cannot_connect",
    ),
    (
        (
            "NewFs: couldn't connect SSH: ssh: handshake failed: ssh: unable to authenticate, attempted methods"
            " [none password], no supported methods remain"
        ),
        "invalid_auth",
    ),
    ("error in ListJSON: couldn't list files: 401 Unauthorized", "invalid_auth"),
    ("error in ListJSON: directory not found", "not_found"),
    ("error in ListJSON: couldn't list files: 404 Not Found", "not_found"),
    ("NewFs: Authorization Failed", "invalid_auth"),
    ("NewFs: failed to authorize account: unauthorized: bad key (401 unauthorized)", "invalid_auth"),
    (
        "error in ListJSON: couldn't fetch token: invalid_grant: maybe token expired? - try refreshing",
        "invalid_auth",
    ),
    ("NewFs: dial tcp: lookup nowhere.invalid: no such host", "cannot_connect"),
    ('error in ListJSON: Get "http://127.0.0.1:40403/": context deadline exceeded', "timeout"),
    ("something nobody has seen before", None),
]


@pytest.mark.parametrize(("text", "reason"), OBSERVED)
def test_classify(text: str, reason: str | None) -> None:
    assert classify(text) == reason


def test_port_numbers_do_not_look_like_status_codes() -> None:
    assert classify('failed to make FTP connection to "127.0.0.1:40301": EOF') is None


def test_excerpt_strips_prefixes_and_takes_first_line() -> None:
    assert excerpt('Failed to create file system for "x:": NewFs: couldn\'t connect SSH: boom\nmore') == (
        "couldn't connect SSH: boom"
    )
    assert excerpt("error in ListJSON: couldn't list files: 401 Unauthorized") == "401 Unauthorized"
    assert excerpt("2026/01/02 03:04:05 ERROR : error listing: directory not found") == "directory not found"
    assert excerpt("\n\n") is None
    azure = (
        "error in ListJSON: GET http://127.0.0.1:1/devstoreaccount1\n-----\nRESPONSE 403: 403 Server failed"
        " to authenticate the request.\nERROR CODE: AuthorizationFailure\n-----\n"
    )
    assert excerpt(azure) == "RESPONSE 403: 403 Server failed to authenticate the request."
    s3 = (
        "error in ListJSON: operation error S3: ListBuckets, https response error StatusCode: 403, RequestID: A1,"
        " HostID: B2=, api error SignatureDoesNotMatch: nope"
    )
    assert excerpt(s3) == (
        "operation error S3: ListBuckets, https response error StatusCode: 403,"
        " api error SignatureDoesNotMatch: nope"
    )


def test_scrub_every_form_of_a_secret() -> None:
    pem = "-----BEGIN KEY-----\nAAAACANARYPEM\n-----END KEY-----\n"
    token = '{"access_token":"CANARY-AT","refresh_token":"CANARY-RT","expiry":"2020-01-01T00:00:00Z"}'
    password = "CANARY-pass"
    config = {"type": "ftp", "pass": obscure(password), "user": "bob"}
    attrs = {"pass": password, "token": token, "user": "bob", "host": "h"}
    secrets = secret_values(attrs, ("pass", "token"), config, key_pem=pem)
    one_line = pem.replace("\n", "\\n")
    text = (
        f"pass={password} obscured={config['pass']} pem={pem} one-line={one_line}"
        f" at=CANARY-AT rt=CANARY-RT url=https://u:CANARY-url@example.com/x user=bob"
    )
    cleaned = scrub(text, secrets)
    assert "CANARY" not in cleaned
    assert config["pass"] not in cleaned
    assert cleaned.count(MASK) >= 6
    # Not a secret of this provider: kept, so the message stays useful.
    assert "user=bob" in cleaned


def test_empty_secrets_do_not_mask_everything() -> None:
    assert scrub("hello", secret_values({"pass": ""}, ("pass",))) == "hello"
