"""midclt-cc over wss:// to a daemon serving TLS with a self-signed certificate (--insecure)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.test_cli import running_daemon


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_wss_needs_insecure_for_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    with running_daemon(state, scheme="wss", tls_certificate=str(cert), tls_private_key=str(key)) as d:
        ok = d.tcp("--insecure", "ping")
        assert (ok.returncode, ok.stdout) == (0, "pong\n"), ok.stderr
        assert d.tcp("call", "--insecure", "core.ping").stdout == '"pong"\n'
        refused = d.tcp("ping")
        assert refused.returncode == 3
        assert "certificate verify failed" in refused.stderr, refused.stderr
        # Plain ws:// to the TLS port does not get through either.
        plain = d.cli("-u", d.tcp_uri.replace("wss://", "ws://"), "ping")
        assert plain.returncode == 3, plain.stderr
