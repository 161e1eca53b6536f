"""keychaincredential.*: SSH key pairs, referenced by the KEYCHAIN fields of credentials (SFTP's private_key)."""

from __future__ import annotations

import errno
import logging
from typing import Annotated, Any, Literal

from pydantic import StringConstraints
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from middlewared_cc import roles as _roles
from middlewared_cc.context import Call, Services
from middlewared_cc.errors import BrokenInvariant, CallError, FieldError, InstanceNotFound, ValidationErrors
from middlewared_cc.providers import REDACTED
from middlewared_cc.query import filter_rows_yielding, finish, parse_query
from middlewared_cc.rpc.registry import MethodSet, Model
from middlewared_cc.rpc.types import Name
from middlewared_cc.store import credentials as cred_store
from middlewared_cc.store import keychain as store

log = logging.getLogger("middlewared_cc.keychain")
methods = MethodSet()
TOPIC = "keychain"  # the change feed's topic (payload: the key pair's id); key pairs are read from the database
Pem = Annotated[str, StringConstraints(min_length=1, max_length=16384)]


class KeyPairAttributes(Model):
    private_key: Pem
    public_key: Annotated[str, StringConstraints(max_length=16384)] | None = None


class KeyCreate(Model):
    name: Name
    type: Literal["SSH_KEY_PAIR"]
    attributes: KeyPairAttributes


class KeyUpdate(Model):
    name: Name | None = None
    attributes: KeyPairAttributes | None = None


class DeleteOptions(Model):
    cascade: bool = False


class GenerateOptions(Model):
    type: Literal["ed25519", "rsa"] = "ed25519"
    # RSA only. A closed list: the cost of an RSA key grows with the fourth power of its size, and a
    # generation cannot be interrupted (76,110 or 10**9 bits would hold a CPU for hours).
    bits: Literal[2048, 3072, 4096] = 4096


def _entry(pair: store.StoredKeyPair, can_see: bool) -> dict[str, Any]:
    private = pair.private_key if can_see else REDACTED
    entry: dict[str, Any] = {"id": pair.id, "name": pair.name, "type": pair.type,
                             "attributes": {"private_key": private, "public_key": pair.public_key}}
    if pair.undecryptable:
        entry["attributes"].pop("private_key")
        entry["undecryptable"] = f"private key cannot be decrypted: {pair.undecryptable}"
    return entry


def _checked(attrs: KeyPairAttributes, path: str) -> tuple[str, str]:
    """(private, public) after checking the key reads and the public key belongs to it."""
    from middlewared_cc.keychain import keys  # on first use: an idle daemon does not carry it

    try:
        public = keys.public_key_from_private(attrs.private_key)
        if attrs.public_key and not keys.check_key_pair(attrs.private_key, attrs.public_key):
            raise ValidationErrors([FieldError(f"{path}.public_key", "Public key does not match the private key")])
    except ValueError as exc:
        raise ValidationErrors([FieldError(f"{path}.private_key", str(exc))]) from None
    return attrs.private_key, attrs.public_key.strip() if attrs.public_key else public


async def private_key_pem(services: Services, ident: int) -> str:
    """The PEM of key pair ``ident``, for rclone; a clear error when it is missing or sealed shut."""
    async with services.db() as db:
        pair = await store.get(db, services.sealer, ident)
    if pair is None:
        raise InstanceNotFound(f"SSH key pair {ident}")
    if pair.private_key is None:
        raise CallError(f"SSH key pair {pair.name!r} cannot be decrypted with the current key", errno.EIO)
    return pair.private_key


@methods.method("keychaincredential.query", role=_roles.KEYCHAIN_CREDENTIAL_READ)
async def query(call: Call, filters: list[Any] = [], options: dict[str, Any] = {}) -> Any:  # noqa: B006 - a schema default, never mutated
    """SSH key pairs; private keys are shown only to callers with KEYCHAIN_CREDENTIAL_WRITE."""
    can_see = call.can(_roles.KEYCHAIN_CREDENTIAL_WRITE)
    q = parse_query(filters, options)
    if not can_see and any(p[:2] == ("attributes", "private_key") for p in q.referenced_paths()):
        raise ValidationErrors([FieldError("keychaincredential_query.filters",
                                           "attributes.private_key cannot be used without the write role")])
    async with call.services.db() as db:
        rows = [_entry(p, can_see) for p in await store.all_pairs(db, call.services.sealer)]
    return finish(await filter_rows_yielding(rows, q), q, what="Keychain credential")


@methods.method("keychaincredential.create", role=_roles.KEYCHAIN_CREDENTIAL_WRITE)
async def create(call: Call, data: KeyCreate) -> dict[str, Any]:
    """Store an SSH key pair; the public key is derived from the private key when left out."""
    private, public = _checked(data.attributes, "keychain_credential_create.attributes")
    services = call.services
    try:
        pair = await services.writer.run(lambda conn: _save(services, conn, None, data.name, private, public))
    except IntegrityError:
        raise ValidationErrors([FieldError("keychain_credential_create.name",
                                           "Object with this name already exists")]) from None
    if pair is None:  # save() answers None only when replacing a row that is gone
        raise BrokenInvariant("a new key pair was not stored")
    log.info("keychain credential %d created", pair.id)
    return _entry(pair, True)


@methods.method("keychaincredential.update", role=_roles.KEYCHAIN_CREDENTIAL_WRITE)
async def update(call: Call, id: int, data: KeyUpdate) -> dict[str, Any]:
    """Rename a key pair or replace its keys."""
    services = call.services
    async with services.db() as db:
        stored = await store.get(db, services.sealer, id)
    if stored is None:
        raise InstanceNotFound(f"Keychain credential {id}")
    if data.attributes is not None:
        private, public = _checked(data.attributes, "keychain_credential_update.attributes")
    elif stored.private_key is None:
        raise CallError("The private key cannot be decrypted; send new attributes", errno.EIO)
    else:
        private, public = stored.private_key, stored.public_key
    name = data.name or stored.name
    try:
        pair = await services.writer.run(lambda conn: _save(services, conn, id, name, private, public))
    except IntegrityError:
        raise ValidationErrors([FieldError("keychain_credential_update.name",
                                           "Object with this name already exists")]) from None
    if pair is None:
        raise InstanceNotFound(f"Keychain credential {id}")
    return _entry(pair, True)


async def _save(services: Services, conn: AsyncConnection, ident: int | None, name: str, private: str,
                public: str) -> store.StoredKeyPair | None:
    """store.save in the writer's transaction, telling the other nodes (change feed topic "keychain")."""
    pair = await store.save(conn, services.sealer, ident, name, private, public)
    if pair is not None:
        await services.feed.publish(conn, TOPIC, str(pair.id))
    return pair


def _references(services: Services, cred: cred_store.StoredCredential, ident: int) -> bool:
    """Whether ``cred`` holds keychain credential ``ident`` in a KEYCHAIN field of its provider."""
    if cred.provider not in services.providers:
        return False  # its plugin is unavailable: which of its attributes are references is unknown
    provider = services.providers.get(cred.provider)
    return any(key_id == ident for _, key_id in provider.keychain_references(cred.attributes))


@methods.method("keychaincredential.delete", role=_roles.KEYCHAIN_CREDENTIAL_WRITE)
async def delete(call: Call, id: int, options: DeleteOptions | None = None) -> bool:
    """Delete a key pair. Refused while a cloud credential references it (an SFTP private key, or any
    provider's keychain field), unless ``cascade`` (which deletes those credentials too)."""
    from middlewared_cc.services.credentials import delete_row, removed

    cascade = bool(options and options.cascade)
    services = call.services

    async def write(conn: AsyncConnection) -> list[int]:
        users = [c for c in services.credentials if _references(services, c, id)]
        if users and not cascade:
            names = ", ".join(repr(c.name) for c in users)
            raise CallError(f"SSH key pair {id} is used by cloud credential(s) {names}; delete them first "
                            "or pass {\"cascade\": true}", errno.EBUSY)
        for c in users:
            await delete_row(services, conn, c.id)
        if not await store.delete(conn, id):
            raise InstanceNotFound(f"Keychain credential {id}")
        await services.feed.publish(conn, TOPIC, str(id))
        return [c.id for c in users]

    def done(gone: list[int]) -> None:
        for ident in gone:
            removed(services, ident)

    await services.writer.run(write, done)
    return True


@methods.method("keychaincredential.generate_ssh_key_pair", role=_roles.KEYCHAIN_CREDENTIAL_WRITE)
async def generate_ssh_key_pair(call: Call, options: GenerateOptions | None = None) -> dict[str, str]:
    """A new key pair ``{private_key, public_key}``: Ed25519 by default, or ``{"type": "rsa", "bits": N}``
    with N one of 2048, 3072, 4096 (default 4096). Made off the event loop, a few at a time; EBUSY when
    too many generations are already queued."""
    from middlewared_cc.keychain import generation

    options = options or GenerateOptions()
    try:
        return await generation.generate(options.type, options.bits)
    except ValueError as exc:
        raise ValidationErrors([FieldError("keychaincredential_generate_ssh_key_pair.bits", str(exc))]) from None
