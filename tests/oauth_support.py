"""Shared by the OAuth tests (wire and browser): the consent fakes' world and a daemon behind its proxy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest

from tests.servers.cloud.consent import ConsentFake, OAuthWorld, running_oauth_world

OAUTH_TYPES = ["BOX", "DROPBOX", "GOOGLE_DRIVE", "ONEDRIVE", "PCLOUD", "YANDEX"]


@pytest.fixture(scope="module")
def oauth_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthWorld]:
    """The six providers' fakes with consent pages, behind a proxy of their own."""
    with running_oauth_world(tmp_path_factory.mktemp("oauth-world")) as world:
        yield world


def daemon_settings(world: OAuthWorld) -> dict[str, str]:
    """Settings that send the daemon's (and rcd's) outbound calls to the world's fakes."""
    return {"https_proxy": world.proxy.url, "ca_file": str(world.proxy.ca_pem_path), "verify_timeout": "30"}


async def consent(fake: ConsentFake, authorize_url: str, *, allow: bool = True, region: str | None = None) -> str:
    """Act as the person at the consent page: load it, press Allow (or Deny); the address redirected to."""
    local = fake.local_url(authorize_url)
    async with aiohttp.ClientSession() as session:
        async with session.get(local) as page:
            assert page.status == 200, await page.text()
            assert "Allow" in await page.text()
        form = dict(parse_qsl(urlsplit(authorize_url).query))
        form["decision"] = "allow" if allow else "deny"
        if region is not None:
            form["region"] = region
        elif fake.consent.spec.regions:
            form["region"] = fake.consent.spec.regions[0]
        async with session.post(local.split("?")[0], data=form, allow_redirects=False) as answer:
            assert answer.status == 302, await answer.text()
            return answer.headers["Location"]


def attributes_from(ptype: str, result: dict[str, Any]) -> dict[str, Any]:
    """The provider object a form would save from a login's result."""
    attrs = {k: v for k, v in result.items() if k != "drives"}
    if ptype == "ONEDRIVE":
        drive = result["drives"][0]
        attrs.update(drive_type=drive["drive_type"], drive_id=drive["drive_id"])
    if ptype == "GOOGLE_DRIVE":
        attrs["team_drive"] = ""
    return {"type": ptype, **attrs}
