"""TLS contexts for the servers (``wss://``, ``https://``) and for device clients.

The servers load a certificate and its private key once, at startup, and
refuse to start with a clear message when either is missing, unreadable,
not PEM, expired, or when the key does not belong to the certificate
(:func:`server_ssl_context`). Clients always verify the server's
certificate and host name (:func:`client_ssl_context`); a self-signed
certificate is trusted by naming it (or its CA) as ``ca_file``, never by
turning verification off. Both sides accept TLS 1.2 and newer only.

The in-process demo devices of ``serve --demo`` trust exactly the server's
own certificate (:func:`pinned_ssl_context`), whatever name it was issued
for: the server may listen on ``0.0.0.0`` while its certificate names the
site.

Plain :mod:`ssl` and :mod:`cryptography` only, so that the dashboard can
use it without importing anything of the ingest server.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = [
    "MINIMUM_TLS_VERSION",
    "TLSConfigError",
    "client_ssl_context",
    "pinned_ssl_context",
    "server_ssl_context",
]

#: Oldest protocol version either side accepts.
MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2


class TLSConfigError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the file."""


def server_ssl_context(certfile: str | Path, keyfile: str | Path | None = None) -> ssl.SSLContext:
    """A server-side TLS context from a PEM certificate (chain) and its private key.

    Parameters
    ----------
    certfile : path
        PEM file with the server certificate first, then any intermediate
        certificates.
    keyfile : path, optional
        PEM file with the unencrypted private key of the certificate;
        default: the key is in ``certfile`` after the certificates.

    Returns
    -------
    ssl.SSLContext
        TLS 1.2 or newer, Python's default server ciphers.

    Raises
    ------
    TLSConfigError
        If a file is missing or unreadable, ``certfile`` holds no PEM
        certificate or an expired one, the key is missing, encrypted or
        malformed, or it does not match the certificate.

    Examples
    --------
    >>> context = server_ssl_context("site.crt", "site.key")  # doctest: +SKIP
    """
    cert_path = Path(certfile)
    key_path = Path(keyfile) if keyfile is not None else cert_path
    _leaf_certificate(cert_path)  # a precise message for a bad certificate before OpenSSL's vague one
    _read(key_path, "private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_TLS_VERSION
    try:
        context.load_cert_chain(cert_path, key_path, password=_no_password(key_path))
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSConfigError(
                f"the private key {key_path} does not match the certificate {cert_path}"
            ) from exc
        raise TLSConfigError(f"{key_path} holds no usable PEM private key ({exc.reason or exc})") from exc
    return context


def client_ssl_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """A client-side TLS context that verifies the server's certificate and host name.

    Parameters
    ----------
    ca_file : path, optional
        PEM file of the certificates to trust (a private CA, or a
        self-signed server certificate itself), instead of the system's
        trust store; default: the system's trust store.

    Raises
    ------
    TLSConfigError
        If ``ca_file`` is missing, unreadable or holds no PEM certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    context.minimum_version = MINIMUM_TLS_VERSION
    if ca_file is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        path = Path(ca_file)
        _load_trust(context, path, _read(path, "CA file"))
    return context


def pinned_ssl_context(certfile: str | Path) -> ssl.SSLContext:
    """A client context that trusts one certificate only: the first in ``certfile``.

    The host name is not checked, because nothing but that exact
    certificate is accepted: this is for clients inside the server's own
    process (``serve --demo``), which connect to whatever address the
    server listens on.

    Raises
    ------
    TLSConfigError
        If ``certfile`` is missing, unreadable or holds no PEM certificate.
    """
    path = Path(certfile)
    leaf = _leaf_certificate(path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM_TLS_VERSION
    context.check_hostname = False  # the trust anchor is the leaf itself; verify_mode stays CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a CA-issued leaf is an anchor too
    _load_trust(context, path, leaf.public_bytes(Encoding.PEM).decode("ascii"))
    return context


# Internals -------------------------------------------------------------------------


def _read(path: Path, what: str) -> str:
    """The text of a PEM file, or an error that names it."""
    try:
        return path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise TLSConfigError(f"the {what} {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise TLSConfigError(f"cannot read the {what} {path}: {exc}") from exc


def _leaf_certificate(path: Path) -> x509.Certificate:
    """The first certificate of a PEM file, checked to be valid now."""
    text = _read(path, "certificate")
    try:
        certificates = x509.load_pem_x509_certificates(text.encode("ascii"))
    except ValueError as exc:
        raise TLSConfigError(f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)") from exc
    leaf = certificates[0]
    now = datetime.now(UTC)
    if leaf.not_valid_after_utc < now:
        raise TLSConfigError(
            f"the certificate {path} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if leaf.not_valid_before_utc > now:
        raise TLSConfigError(
            f"the certificate {path} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    return leaf


def _load_trust(context: ssl.SSLContext, path: Path, pem: str) -> None:
    """Trust the certificates of ``pem`` (read from ``path``)."""
    try:
        context.load_verify_locations(cadata=pem)
    except ssl.SSLError as exc:
        raise TLSConfigError(f"{path} holds no PEM certificate to trust ({exc.reason or exc})") from exc


def _no_password(key_path: Path) -> Callable[[], str]:
    """A password callback that refuses encrypted keys (OpenSSL would otherwise prompt on the terminal)."""

    def refuse() -> str:
        raise TLSConfigError(f"the private key {key_path} is encrypted; give an unencrypted key")

    return refuse
