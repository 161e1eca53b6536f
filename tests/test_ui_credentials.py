"""The Cloud Credentials form in a real browser, against the real daemon and the local servers (issue 10):
S3 against moto (verify, a wrong secret, edit keeping the secret), Google Cloud Storage through the file
chooser and the preview, SFTP with Generate New against sshd, the OneDrive drives list against the fake,
validation errors on their fields, delete with confirmation, the keyboard alone.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.ui.assertions import expect
from tests.ui.daemon_thread import ThreadDaemon
from tests.ui.page import UI

CANARY = "mwcc-ui-canary-" + secrets.token_hex(6)


def _stored(daemon: ThreadDaemon, name: str) -> dict[str, Any]:
    (found,) = daemon.call("cloudsync.credentials.query", [["name", "=", name]])
    result: dict[str, Any] = found
    return result


def _fill_s3(ui: UI, s3: Any, name: str, secret: str) -> None:
    ui.field("Name").fill(name)
    ui.choose_provider("Amazon S3")
    ui.field("Access Key ID").fill(s3.access_key_id)
    ui.field("Secret Access Key").fill(secret)
    ui.open_group("Advanced Options")
    ui.field("Endpoint URL").fill(s3.endpoint)


def test_s3_against_moto_verify_wrong_secret_save_and_edit(ui: UI, s3_server: Any) -> None:
    ui.login_as_admin()
    ui.add()
    _fill_s3(ui, s3_server, "moto", s3_server.wrong_secret)
    ui.screenshot("s3-form-advanced-options")
    error = ui.verify_error()
    assert s3_server.wrong_secret not in ui.page.content()
    expect(error).to_contain_text(re.compile(r"signature|access denied|forbidden|invalid", re.IGNORECASE))
    ui.screenshot("verify-error")
    ui.field("Secret Access Key").fill(s3_server.secret_access_key)
    ui.verify_valid()
    ui.save()
    ui.row("moto").wait_for()
    expect(ui.row("moto")).to_contain_text("Amazon S3")
    stored = _stored(ui.daemon, "moto")["provider"]
    assert stored["secret_access_key"] == s3_server.secret_access_key
    assert stored["endpoint"] == s3_server.endpoint

    # Edit: the secret is not sent back to the page; left empty, it keeps the stored one.
    ui.edit("moto")
    secret = ui.field("Secret Access Key")
    expect(secret).to_have_value("")
    expect(secret).to_have_attribute("placeholder", re.compile("unchanged", re.IGNORECASE))
    assert s3_server.secret_access_key not in ui.page.content()
    ui.verify_valid()
    ui.field("Name").fill("moto renamed")
    ui.save()
    ui.row("moto renamed").wait_for()
    assert _stored(ui.daemon, "moto renamed")["provider"]["secret_access_key"] == s3_server.secret_access_key


def _service_account(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    account = {
        "type": "service_account", "project_id": "mwcc-ui", "private_key_id": "k1",
        "private_key": f"-----BEGIN PRIVATE KEY-----\n{CANARY}\n-----END PRIVATE KEY-----\n",
        "client_email": "sa@mwcc-ui.iam.gserviceaccount.com", "token_uri": "https://oauth2.googleapis.com/token",
    }  # fmt: skip
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(account, indent=2))
    return path, account


def test_gcs_file_chooser_and_preview_never_show_the_private_key(ui: UI, tmp_path: Path) -> None:
    path, account = _service_account(tmp_path)
    not_json = tmp_path / "not-a-key.json"
    not_json.write_text("this is not JSON")
    no_key = tmp_path / "no-private-key.json"
    no_key.write_text(json.dumps({"type": "service_account", "client_email": "x@y"}))
    ui.login_as_admin()
    ui.add()
    ui.field("Name").fill("gcs")
    ui.choose_provider("Google Cloud Storage")
    for bad in (not_json, no_key):
        ui.choose_file("Choose File", bad)
        ui.page.get_by_text(re.compile(r"not JSON|not a|missing|client_email|private_key", re.IGNORECASE)) \
            .first.wait_for()
        ui.save()
        assert ui.daemon.call("cloudsync.credentials.query") == [], f"{bad.name} was sent"
    ui.choose_file("Choose File", path)
    preview = ui.page.get_by_label("Preview JSON Service Account Key")
    expect(preview).to_contain_text(account["client_email"]) if _is_text(preview) else \
        expect(preview).to_have_value(re.compile(re.escape(account["client_email"])))
    assert CANARY not in ui.page.content()
    assert CANARY not in (ui.page.evaluate("() => document.body.innerText") or "")
    assert not ui.page.evaluate(
        "c => [...document.querySelectorAll('input:not([type=password]), textarea')].some(e => e.value.includes(c))",
        CANARY), "the private key shows in a visible field"
    ui.save()
    ui.row("gcs").wait_for()
    stored = json.loads(_stored(ui.daemon, "gcs")["provider"]["service_account_credentials"])
    assert stored["private_key"] == account["private_key"]


def _is_text(locator: Any) -> bool:
    tag: str = locator.evaluate("e => e.tagName")
    return tag not in ("TEXTAREA", "INPUT")


@contextmanager
def _authorized(sftp: Any, public_key: str) -> Iterator[None]:
    """Let ``public_key`` log in to the session's sshd for a while (sshd reads the file per connection)."""
    keys = sftp.home.parent / "authorized_keys"
    before = keys.read_text()
    keys.write_text(before + public_key.strip() + "\n")
    try:
        yield
    finally:
        keys.write_text(before)


def test_sftp_generate_new_key_pair_verifies_against_sshd(ui: UI, sftp_server: Any) -> None:
    ui.login_as_admin()
    ui.add()
    ui.fill({"Name": "nas backup"})
    ui.choose_provider("SFTP")
    ui.fill({"Host": sftp_server.host, "Port": str(sftp_server.port), "Username": sftp_server.user})
    ui.button("Generate New").click()
    pairs: list[dict[str, Any]] = []

    def generated() -> bool:
        pairs[:] = ui.daemon.call("keychaincredential.query", [["name", "=", "nas backup Key"]])
        return bool(pairs)

    _wait_until(generated, "the generated key pair 'nas backup Key' to be stored")
    (pair,) = pairs
    key_select = ui.field("Private Key ID")
    expect(key_select).to_have_value(str(pair["id"]))
    with _authorized(sftp_server, pair["attributes"]["public_key"]):
        ui.verify_valid()
    ui.save()
    ui.row("nas backup").wait_for()
    assert _stored(ui.daemon, "nas backup")["provider"]["private_key"] == pair["id"]


def _wait_until(check: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"waited {timeout_s} s for {what}"
        time.sleep(0.1)


def test_onedrive_drives_list_from_the_local_fake(
        ui_factory: Callable[..., UI], ui_daemon_factory: Callable[..., ThreadDaemon], oauth_server: Any) -> None:
    daemon = ui_daemon_factory(onedrive_graph_url=oauth_server.graph_url, onedrive_token_url=oauth_server.token_url)
    ui = ui_factory(daemon)
    ui.login_as_admin()
    ui.add()
    ui.fill({"Name": "onedrive"})
    ui.choose_provider("Microsoft OneDrive")
    ui.open_group("OAuth Advanced Options")
    ui.fill({"OAuth Client ID": oauth_server.attributes["client_id"],
             "OAuth Client Secret": oauth_server.attributes["client_secret"]})
    token = oauth_server.mint_token()
    # What `rclone authorize` prints, pasted whole.
    ui.field("Access Token").fill(f"Paste the following into your remote machine --->\n{token}\n<---End paste")
    drives = ui.field("Drives List")
    expect(drives).to_be_enabled(timeout=20_000)  # listed from the fake once the token is in
    expect(drives.locator("option")).to_have_count(2)  # "Choose a drive" and the fake's one drive
    drives.select_option(index=1)
    expect(ui.field("Drive ID")).to_have_value(oauth_server.drive_id)
    expect(ui.field("Drive Account Type")).to_have_value(oauth_server.drive_type)
    ui.save()
    ui.row("onedrive").wait_for()
    stored = _stored(daemon, "onedrive")["provider"]
    assert stored["drive_id"] == oauth_server.drive_id
    assert json.loads(stored["token"])["access_token"] == json.loads(token)["access_token"]


def test_a_pasted_non_token_is_named_as_such(ui: UI) -> None:
    ui.login_as_admin()
    ui.add()
    ui.fill({"Name": "dropbox"})
    ui.choose_provider("Dropbox")
    ui.field("Access Token").fill("this is not a token")
    ui.field("Name").focus()
    ui.save()
    token = ui.field("Access Token")
    expect(token).to_have_attribute("aria-invalid", "true")
    expect(token).to_have_accessible_description(re.compile("not a token", re.IGNORECASE))
    expect(token).to_be_focused()
    assert ui.daemon.call("cloudsync.credentials.query") == []


def test_verify_shows_it_is_working_and_can_be_cancelled(ui: UI) -> None:
    """A server that accepts the connection and never answers: elapsed time and Cancel while it hangs, and
    Cancel ends the daemon's verify too (the page runs it on a connection of its own and closes that)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        ui.login_as_admin()
        ui.add()
        ui.fill({"Name": "hangs"})
        ui.choose_provider("FTP")
        ui.fill({"Host": "127.0.0.1", "Port": str(silent.getsockname()[1]), "Username": "u", "Password": "p"})
        ui.button("Verify Credential").click()
        busy = ui.page.get_by_role("status").filter(has=ui.page.get_by_role("button", name="Cancel"))
        expect(busy).to_contain_text(re.compile(r"\d+ s"))
        expect(ui.button("Verify Credential")).to_be_disabled()
        slots = ui.daemon.services.verify_slots
        assert _soon(lambda: slots.running == 1), "the daemon runs the verify"
        busy.get_by_role("button", name="Cancel").click()
        expect(ui.page.get_by_role("status").filter(has_text=re.compile("cancel", re.IGNORECASE))).to_be_visible()
        expect(ui.button("Verify Credential")).to_be_enabled()
        # Long before the verify's own timeout: nothing of it is left running in the daemon.
        assert _soon(lambda: slots.running == 0), "Cancel left the daemon's verify running"
        assert _soon(lambda: sum(s.inflight for s in ui.daemon.services.sessions) == 0)
        assert ui.daemon.services.settings.verify_timeout > 5
        # The form still verifies afterwards, on a fresh connection (the single-use token was spent).
        ui.fill({"Port": "9"})
        ui.button("Verify Credential").click()
        expect(ui.page.get_by_role("status").filter(has_text=re.compile("reached|refused|connect", re.IGNORECASE))
               ).to_be_visible(timeout=20_000)
        assert len(ui.daemon.services.auth.tokens) == 1, "only the page's own reload token is outstanding"


def _soon(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Whether ``check`` holds within ``seconds`` (polled)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_daemon_errors_land_on_their_fields_and_focus_the_first(ui: UI) -> None:
    ui.daemon.call("cloudsync.credentials.create", {"name": "taken", "provider": {"type": "HTTP", "url": "http://a/"}})
    ui.login_as_admin()
    ui.row("taken").wait_for()
    ui.add()
    ui.fill({"Name": "taken"})
    ui.choose_provider("Amazon S3")
    ui.fill({"Access Key ID": "AKIA", "Secret Access Key": CANARY})
    ui.save()
    # A taken name is flagged before anything is sent.
    expect(ui.field("Name")).to_have_attribute("aria-invalid", "true")
    expect(ui.field("Name")).to_be_focused()
    assert len(ui.daemon.call("cloudsync.credentials.query")) == 1
    ui.fill({"Name": "fresh"})
    ui.open_group("Advanced Options")
    # The browser accepts this URL; the daemon refuses it (http or https only) with a -32602 on the field.
    ui.fill({"Endpoint URL": "ftp://127.0.0.1/"})
    ui.save()
    endpoint = ui.field("Endpoint URL")
    expect(endpoint).to_have_attribute("aria-invalid", "true")
    expect(endpoint).to_have_accessible_description(re.compile("http or https", re.IGNORECASE))
    expect(endpoint).to_be_focused()
    expect(ui.field("Access Key ID")).not_to_have_attribute("aria-invalid", "true")
    assert len(ui.daemon.call("cloudsync.credentials.query")) == 1


def test_delete_asks_naming_the_credential(ui: UI) -> None:
    ui.daemon.call("cloudsync.credentials.create", {"name": "old files", "provider": {"type": "HTTP", "url": "http://a/"}})
    ui.daemon.call("cloudsync.credentials.create", {"name": "keep", "provider": {"type": "HTTP", "url": "http://b/"}})
    ui.login_as_admin()
    confirm = ui.page.get_by_role("dialog", name=re.compile("^delete", re.IGNORECASE)).or_(
        ui.page.get_by_role("alertdialog"))
    # From the list's row: asked, and Cancel keeps it.
    ui.row("old files").get_by_role("button", name="Delete").click()
    expect(confirm).to_contain_text('"old files"')
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    assert len(ui.daemon.call("cloudsync.credentials.query")) == 2
    # From its form: asked again, and Confirm deletes it.
    ui.edit("old files")
    ui.button("Delete").click()
    expect(confirm).to_contain_text('"old files"')
    confirm.get_by_role("button", name=re.compile(r"^(delete|yes|confirm)$", re.IGNORECASE)).click()
    expect(ui.row("old files")).to_have_count(0)
    assert [c["name"] for c in ui.daemon.call("cloudsync.credentials.query")] == ["keep"]


def test_keyboard_alone_adds_a_credential(ui: UI) -> None:
    ui.login_as_admin()
    keyboard = ui.page.keyboard
    for _ in range(40):
        keyboard.press("Tab")
        if ui.page.evaluate("() => document.activeElement?.textContent?.trim()") == "Add":
            break
    else:
        raise AssertionError("Tab never reached the Add button")
    keyboard.press("Enter")
    expect(ui.field("Name")).to_be_focused()
    # Escape closes the form; Add again.
    keyboard.press("Escape")
    expect(ui.field("Name")).to_have_count(0)
    ui.page.get_by_role("button", name="Add").focus()
    keyboard.press("Enter")
    expect(ui.field("Name")).to_be_focused()
    keyboard.type("by keyboard")
    keyboard.press("Tab")
    expect(ui.field("Provider")).to_be_focused()
    keyboard.type("HTTP")  # type-ahead in the focused select
    expect(ui.field("Provider")).to_have_value("HTTP")
    keyboard.press("Tab")
    expect(ui.field("URL")).to_be_focused()
    keyboard.type("http://127.0.0.1:9/files/")
    keyboard.press("Enter")
    ui.row("by keyboard").wait_for()
    assert _stored(ui.daemon, "by keyboard")["provider"]["url"] == "http://127.0.0.1:9/files/"
