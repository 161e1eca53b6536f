"""A provider from a separately installed package gets everything a built-in one gets, by declaration.

The test writes a tiny third-party package (a pyproject.toml with an entry point in the
``middlewared_cc.providers`` group and one module), builds and installs it with pip into a temporary
folder, and starts an unchanged daemon with that folder on the import path. The package's provider is
SFTP logging in with a keychain key only, under a name the daemon has never heard of: its KEYCHAIN field
must get the existence check on create and update, the key's PEM at verify and listing (proved against
the local sshd: the right key logs in, another does not), and the protection of the key on delete.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from middlewared_cc.providers import ENTRY_POINT_GROUP, ProviderRegistry
from tests.conftest import CallFailed, Daemon, start_daemon

TYPE = "KEYVAULT_SFTP"
MODULE = "mcc_keyvault_sftp"
CREATE_PATH = "cloud_sync_credentials_create.provider"

PYPROJECT = f"""\
[build-system]
requires = ["setuptools>=61", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "mcc-keyvault-sftp"
version = "0.1"

[project.entry-points."{ENTRY_POINT_GROUP}"]
{TYPE} = "{MODULE}:PROVIDER"

[tool.setuptools]
py-modules = ["{MODULE}"]
"""

PLUGIN = f'''\
"""SFTP that logs in with a key pair from the keychain only (a third-party plugin)."""

from middlewared_cc.providers import Field, Kind, Provider

PROVIDER = Provider(
    type="{TYPE}",
    title="Key Vault SFTP",
    rclone_type="sftp",
    fields=(
        Field("host", Kind.STRING, title="Host", required=True, min_length=1, rclone_option="host"),
        Field("port", Kind.INT, title="Port", default=22, minimum=1, maximum=65535, rclone_option="port"),
        Field("user", Kind.STRING, title="Username", required=True, min_length=1, rclone_option="user"),
        Field("login_key", Kind.KEYCHAIN, title="Key pair", required=True, keychain_type="SSH_KEY_PAIR",
              rclone_option="key_pem"),
    ),
)
'''


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Build and install the package into a folder of its own; on the import path only while in use."""
    base = tmp_path_factory.mktemp("plugin")
    source, target = base / "src", base / "site"
    source.mkdir()
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / f"{MODULE}.py").write_text(textwrap.dedent(PLUGIN))
    # Offline and bounded: no index, no dependency resolution, the venv's own setuptools and wheel.
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--disable-pip-version-check", "--target", str(target), str(source)],
                   check=True, timeout=180, capture_output=True)
    assert (target / f"{MODULE}.py").exists()
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        sys.modules.pop(MODULE, None)
        importlib.invalidate_caches()
        assert TYPE not in ProviderRegistry.load()  # uninstalled: the other tests see the usual set


@pytest.fixture
async def pdaemon(installed_plugin: Path, settings_factory: Any) -> AsyncIterator[Daemon]:
    """An unchanged daemon: it finds the plugin through the entry points, as in production."""
    settings = settings_factory()
    runner, url = await start_daemon(settings)
    async with aiohttp.ClientSession() as session, \
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket)) as unix_session:
        yield Daemon(runner.app, url, settings.unix_socket, session, unix_session, settings.state_dir)
    await runner.cleanup()


def test_the_package_is_found_through_its_entry_point(installed_plugin: Path) -> None:
    registry = ProviderRegistry.load()
    assert registry.unavailable() == {}
    assert TYPE in registry and registry.get(TYPE).title == "Key Vault SFTP"
    assert registry.get(TYPE).problems() == []


async def test_a_third_party_keychain_field_gets_every_capability(pdaemon: Daemon, sftp_server: Any) -> None:
    srv = sftp_server
    root = await pdaemon.root()

    listing = {entry["name"]: entry for entry in await root.call("cloudsync.providers")}
    assert TYPE in listing
    login_key = next(item["schema"] for item in listing[TYPE]["credentials_schema"]
                     if item["property"] == "login_key")
    assert login_key["type"] == "integer" and login_key["minimum"] == 1 and login_key["_required_"] is True

    where = {"host": srv.host, "port": srv.port, "user": srv.user}

    # The existence check, on create and on update.
    with pytest.raises(CallFailed) as err:
        await root.call("cloudsync.credentials.create",
                        {"name": "kv", "provider": {"type": TYPE, **where, "login_key": 999}})
    assert err.value.code == -32602
    [(attribute, message, _)] = err.value.data["extra"]
    assert attribute.startswith(CREATE_PATH) and attribute.endswith(".login_key")
    assert message == "SSH key pair does not exist"
    assert await root.call("cloudsync.credentials.query") == []

    pair = await root.call("keychaincredential.create", {"name": "kv-key", "type": "SSH_KEY_PAIR",
                                                         "attributes": {"private_key": srv.private_key_pem}})
    other = await root.call("keychaincredential.create", {"name": "kv-other", "type": "SSH_KEY_PAIR",
                                                          "attributes": {"private_key": srv.wrong_private_key_pem}})

    # The PEM reaches rclone: the authorised key logs in, another key is refused.
    good = await root.call("cloudsync.credentials.verify", {"type": TYPE, **where, "login_key": pair["id"]})
    assert good["valid"] is True, good
    bad = await root.call("cloudsync.credentials.verify", {"type": TYPE, **where, "login_key": other["id"]})
    assert bad["valid"] is False and bad["reason"] == "invalid_auth", bad
    assert srv.private_key_pem.splitlines()[1] not in str(bad)

    cred = await root.call("cloudsync.credentials.create",
                           {"name": "kv", "provider": {"type": TYPE, **where, "login_key": pair["id"]}})
    assert cred["provider"]["login_key"] == pair["id"]
    items = await root.call("cloudsync.list_directory", {"credentials": cred["id"]})
    assert srv.file_name in {item["Name"] for item in items}

    with pytest.raises(CallFailed) as err:
        await root.call("cloudsync.credentials.update", cred["id"], {"provider": {"type": TYPE, "login_key": 998}})
    assert err.value.code == -32602 and err.value.data["extra"][0][0].endswith(".login_key")

    # The protection on delete: refused while referenced, unless cascade.
    assert await root.call("keychaincredential.delete", other["id"]) is True  # referenced by nothing
    with pytest.raises(CallFailed) as err:
        await root.call("keychaincredential.delete", pair["id"])
    assert err.value.data["errname"] == "EBUSY" and "'kv'" in err.value.data["reason"]
    assert await root.call("cloudsync.credentials.get_instance", cred["id"]) == cred
    assert await root.call("keychaincredential.delete", pair["id"], {"cascade": True}) is True
    assert await root.call("cloudsync.credentials.query") == []
    assert await root.call("keychaincredential.query") == []
