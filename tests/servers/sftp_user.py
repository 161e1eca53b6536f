"""The throwaway system account the SFTP server logs in: made per test session, removed afterwards.

Each account's comment names the pytest process that made it, so a later session can remove the
accounts (and their /tmp directories) of sessions that were killed before they could clean up.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .process import missing

COMMENT_PREFIX = "mwcc-test-sftp pid="
BASE_PREFIX = "mwcc-sftp-"


def run_quietly(argv: list[str], stdin: str | None = None) -> None:
    """Run an admin command; raise with its stderr if it fails."""
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}")


def _kill_processes_of(uid: int) -> None:
    """SIGKILL, one pid at a time, what still runs as uid: SFTP sessions that outlived their sshd."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            status = (entry / "status").read_text()
            real_uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
            if int(real_uid) == uid:
                os.kill(int(entry.name), signal.SIGKILL)


def _remove(name: str, uid: int, home: str) -> None:
    _kill_processes_of(uid)
    with suppress(RuntimeError):
        run_quietly(["userdel", "--force", name])
    base = Path(home).parent
    if base.parent == Path(tempfile.gettempdir()) and base.name.startswith(BASE_PREFIX):
        shutil.rmtree(base, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale_users() -> None:
    """Remove the accounts of test sessions whose process is gone."""
    for entry in pwd.getpwall():
        if not entry.pw_gecos.startswith(COMMENT_PREFIX):
            continue
        pid = entry.pw_gecos.removeprefix(COMMENT_PREFIX)
        if pid.isdigit() and not _alive(int(pid)):
            _remove(entry.pw_name, entry.pw_uid, entry.pw_dir)


def make_base_dir() -> Path:
    """A root-owned, world-traversable directory in /tmp for the account's home, host key and key list.

    pytest's temporary directories are 0700 root: the account could not enter a home inside them.
    """
    base = Path(tempfile.mkdtemp(prefix=BASE_PREFIX))
    base.chmod(0o755)
    return base


@contextmanager
def system_user(home: Path) -> Iterator[tuple[str, str]]:
    """Create an account with home ``home`` and a random password (chpasswd reads it on stdin); yield
    (name, password); then end its processes and delete it."""
    if os.geteuid() != 0:
        missing("the SFTP server needs root to create its test user")
    reap_stale_users()
    name = f"mwcc{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    comment = f"{COMMENT_PREFIX}{os.getpid()}"
    run_quietly(
        ["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh", "-c", comment, name]
    )
    uid = pwd.getpwnam(name).pw_uid
    try:
        run_quietly(["chpasswd"], stdin=f"{name}:{password}\n")
        os.chown(home, uid, pwd.getpwnam(name).pw_gid)
        yield name, password
    finally:
        _kill_processes_of(uid)
        with suppress(RuntimeError):
            run_quietly(["userdel", "--force", name])
