"""A certificate authority made for one test session, issuing a leaf certificate for any host on demand.

The root and every leaf use P-256 keys (a key is made in well under a millisecond; RSA-2048 takes ~50 ms).
Leaves are cached per host name and written once, 0600, into the CA's folder: ``ssl.SSLContext`` loads a
chain only from files. A name that parses as an IP address gets an IP subject-alternative name, anything
else a DNS one, as Go's verifier insists.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID = datetime.timedelta(days=2)
_SKEW = datetime.timedelta(hours=1)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9.-]")


@dataclass(frozen=True)
class Leaf:
    """A leaf certificate's files: ``cert_path`` holds the leaf (no chain: the root is what clients must trust)."""

    host: str
    cert_path: Path
    key_path: Path

    def server_context(self, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
        """A server-side TLS context presenting this leaf; by default it offers HTTP/1.1 only."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_path, self.key_path)
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class TestCA:
    """A root CA (``ca_pem_path``: its certificate, the file a ``ca_file`` setting points at) and leaves."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, folder: Path, name: str = "middlewared-cc test CA") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._leaves: dict[str, Leaf] = {}
        now = datetime.datetime.now(datetime.UTC)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + _VALID)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_pem = self._cert.public_bytes(serialization.Encoding.PEM)
        self.ca_pem_path = self.folder / "ca.pem"
        self.ca_pem_path.write_bytes(self.ca_pem)

    def leaf(self, host: str) -> Leaf:
        """The (cached) leaf for ``host``: a DNS name or an IP address."""
        host = host.lower()
        with self._lock:
            found = self._leaves.get(host)
            if found is None:
                found = self._leaves[host] = self._issue(host)
            return found

    def _issue(self, host: str) -> Leaf:
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            alt = x509.DNSName(host)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + _VALID)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        stem = _SAFE_NAME.sub("_", host)
        cert_path, key_path = self.folder / f"{stem}.crt", self.folder / f"{stem}.key"
        _write_private(key_path, _pem_key(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return Leaf(host, cert_path, key_path)

    def client_context(self) -> ssl.SSLContext:
        """A client-side context trusting this CA only (for tests that talk to a fronted server)."""
        return ssl.create_default_context(cadata=self.ca_pem.decode())
