"""SFTP: a private OpenSSH sshd on a free port, with a throwaway system user made for the session.

The user (``sftp_user``) has a random password and an authorised Ed25519 key; ``AllowUsers`` keeps every
other account of the machine out of this sshd.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .base import ServerInfo, frozen
from .process import HOST, ServerProcess, on_free_port, require_program, running
from .sftp_user import make_base_dir, run_quietly, system_user

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = Path("/usr/bin/ssh-keygen")
FILE_NAME = "hello.txt"
FILE_BODY = b"hello from sshd\n"


@dataclass(frozen=True, kw_only=True)
class SFTPServer(ServerInfo):
    """OpenSSH sshd with one user (password and key); the user's home holds FILE_NAME.

    attributes use the password; ``private_key_pem`` is the authorised key (OpenSSH format, multi-line),
    which a test stores as a keychain SSH key pair. ``host_key`` is "ssh-ed25519 AAAA..." for rclone's
    ``host_keys`` option; ``known_hosts_line`` suits a known_hosts file.
    """

    user: str
    password: str
    private_key_pem: str
    public_key: str
    wrong_private_key_pem: str
    host_key: str
    known_hosts_line: str
    home: Path
    file_name: str


def _key_pair() -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()


def _sshd_config(base: Path, port: int, user: str, authorized_keys: Path) -> str:
    return "\n".join(
        [
            f"Port {port}",
            f"ListenAddress {HOST}",
            f"HostKey {base / 'ssh_host_ed25519_key'}",
            f"PidFile {base / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized_keys}",
            f"AllowUsers {user}",
            "PasswordAuthentication yes",
            "PubkeyAuthentication yes",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            "UsePAM no",
            # The key file sits outside the user's home, in a root-owned directory.
            "StrictModes no",
            "Subsystem sftp internal-sftp",
            # Concurrent verify tests open many connections at once; the default 10:30:100 drops bursts.
            "MaxStartups 100:30:200",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "LogLevel VERBOSE",
            "",
        ]
    )


@contextmanager
def running_sftp(workdir: Path) -> Iterator[SFTPServer]:
    """Run ``sshd -D`` with a private config on a free port, for a user created for this session."""
    sshd = require_program(SSHD, "OpenSSH sshd (apt openssh-server)")
    keygen = require_program(SSH_KEYGEN, "ssh-keygen (apt openssh-client)")
    # sshd's privilege-separation directory; the package's service normally creates it.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    base = make_base_dir()
    try:
        home = base / "home"
        home.mkdir(mode=0o755)
        (home / FILE_NAME).write_bytes(FILE_BODY)
        run_quietly([str(keygen), "-q", "-t", "ed25519", "-N", "", "-f", str(base / "ssh_host_ed25519_key")])
        host_key = " ".join((base / "ssh_host_ed25519_key.pub").read_text().split()[:2])
        private_pem, public_key = _key_pair()
        wrong_pem, _ = _key_pair()
        authorized_keys = base / "authorized_keys"
        authorized_keys.write_text(public_key + "\n")
        authorized_keys.chmod(0o644)
        with system_user(home) as (user, password):
            entry = pwd.getpwnam(user)
            os.chown(home / FILE_NAME, entry.pw_uid, entry.pw_gid)
            config = (workdir / "sshd_config").resolve()
            log = (workdir / "sshd.log").resolve()

            def start(port: int) -> AbstractContextManager[ServerProcess]:
                config.write_text(_sshd_config(base, port, user, authorized_keys))
                return running("sshd", [sshd, "-D", "-f", config, "-E", log], workdir / "sshd.out", port)

            with on_free_port(start) as server:
                port = server.port
                yield SFTPServer(
                    provider="SFTP",
                    host=HOST,
                    port=port,
                    attributes=frozen({"host": HOST, "port": port, "user": user, "pass": password}),
                    secret_attribute="pass",
                    wrong_secret=secrets.token_urlsafe(12),
                    user=user,
                    password=password,
                    private_key_pem=private_pem,
                    public_key=public_key,
                    wrong_private_key_pem=wrong_pem,
                    host_key=host_key,
                    known_hosts_line=f"[{HOST}]:{port} {host_key}",
                    home=home,
                    file_name=FILE_NAME,
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)
