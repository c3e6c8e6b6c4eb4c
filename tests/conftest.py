"""Shared fixtures: where the reference data lives, and synthetic ECG."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sigproc.records import DataNotFoundError, resolve_database_dir


def _database_dir(database: str) -> Path:
    try:
        return resolve_database_dir(database)
    except DataNotFoundError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must have the reference data: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def mitdb_dir() -> Path:
    """Folder of the MIT-BIH Arrhythmia Database (skips when absent, fails on CI)."""
    return _database_dir("mitdb")


@pytest.fixture(scope="session")
def nstdb_dir() -> Path:
    """Folder of the MIT-BIH Noise Stress Test Database."""
    return _database_dir("nstdb")


@pytest.fixture(scope="session")
def data_dir(mitdb_dir: Path) -> Path:
    """The folder that holds ``mitdb/`` (and ``nstdb/``)."""
    return mitdb_dir.parent


@dataclass(frozen=True)
class TLSFiles:
    """A PEM certificate and its unencrypted private key, written by :func:`make_cert`."""

    certfile: Path
    keyfile: Path


@pytest.fixture
def make_cert(tmp_path: Path) -> Callable[..., TLSFiles]:
    """``make_cert(name="server", hosts=("localhost", "127.0.0.1"), valid_days=1.0)``: self-signed.

    Written to ``tmp_path`` with ``cryptography`` (EC P-256, SHA-256): the
    certificate names ``hosts`` (DNS names and IP addresses) as subject
    alternative names; a negative ``valid_days`` makes one that expired.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def make(
        name: str = "server", hosts: Sequence[str] = ("localhost", "127.0.0.1"), valid_days: float = 1.0
    ) -> TLSFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
        alt_names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt_names.append(x509.DNSName(host))
        now = datetime.now(UTC)
        start, end = sorted((now - timedelta(days=2), now + timedelta(days=valid_days)))
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        files = TLSFiles(tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
        files.certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files.keyfile.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        files.keyfile.chmod(0o600)
        return files

    return make


@pytest.fixture
def tls_files(make_cert: Callable[..., TLSFiles]) -> TLSFiles:
    """A self-signed certificate for ``localhost`` and ``127.0.0.1``, valid for a day, and its key."""
    return make_cert()
