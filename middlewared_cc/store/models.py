"""SQLAlchemy models of the config database. Change them only together with a new alembic migration."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class StoreMeta(Base):
    """Facts about the store itself, one row each (e.g. which key the secrets are sealed with)."""

    __tablename__ = "store_meta"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class User(Base):
    """A local user. Ids are never reused (AUTOINCREMENT): a token or key that names an id names one user."""

    __tablename__ = "users"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(256), default="")
    password_hash: Mapped[str] = mapped_column(String(256))
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiKey(Base):
    """An API key belongs to root (``root``) or to one user by id, never by name: deleting the user
    deletes its keys (ON DELETE CASCADE), renaming keeps them, a new user of that name gets none. A key
    with neither owner (its user vanished before migration 0003) logs in as nobody."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("NOT (root AND user_id IS NOT NULL)", name="one_owner"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    root: Mapped[bool] = mapped_column(Boolean, default=False)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=True,
                                                index=True)
    key_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class CloudCredential(Base):
    """One credential. Non-secret attributes stay queryable JSON; secrets are one sealed blob."""

    __tablename__ = "cloud_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    provider: Mapped[str] = mapped_column(String(64), index=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secrets: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class KeychainCredential(Base):
    """SSH key pairs for SFTP; the private key is sealed like every secret."""

    __tablename__ = "keychain_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secrets: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")


class AuditRecord(Base):
    """One audit record (audit/): who called what, from where, with which outcome. ``hash`` is the keyed
    hash chaining it to the record before (see audit/chain.py); every other column is covered by it.
    ``params`` and ``details`` are kept as the exact JSON text that was hashed."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=False)
    audit_id: Mapped[str] = mapped_column(String(36))
    message_timestamp: Mapped[int] = mapped_column(BigInteger, index=True)
    timestamp: Mapped[str] = mapped_column(String(32))
    username: Mapped[str] = mapped_column(String(64))  # not indexed: migration 0005 says why
    session: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(128))
    service: Mapped[str] = mapped_column(String(16))
    event: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(128))  # not indexed: migration 0005
    success: Mapped[bool] = mapped_column(Boolean)
    errno: Mapped[int | None] = mapped_column(Integer, nullable=True)
    params: Mapped[str] = mapped_column(Text)
    details: Mapped[str] = mapped_column(Text)
    hash: Mapped[str] = mapped_column(String(64))
