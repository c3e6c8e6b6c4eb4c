"""Short-lived signed tokens that let a browser subscribe to ``/live``.

The dashboard issues a token to a logged-in user (:func:`issue_live_token`),
scoped to the patients that user may see; the ingest server checks it
(:func:`verify_live_token`) before it streams anything. Both sides share a
secret and nothing else: the token carries its own claims, so the ingest
server needs no session store and no database round trip.

Format: ``base64url(claims JSON) "." base64url(HMAC-SHA256(secret, first part))``,
without padding. The claims are ``{"v": 1, "sub": user id, "pat": [patient
ids], "iat": issued at, "exp": expires at}`` (seconds since the epoch). The
signature is checked in constant time before the claims are parsed, so a
forged token is refused without its content being looked at.

Tokens are bearer credentials: keep their lifetime short (a minute is
plenty, the browser asks for a new one at every (re)connect) and send them
only over TLS (``wss://``). The server checks a token when a connection
subscribes; an open connection is not cut when its token expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "LIVE_TOKEN_VERSION",
    "ExpiredLiveTokenError",
    "InvalidLiveTokenError",
    "LiveClaims",
    "LiveTokenError",
    "issue_live_token",
    "live_secret_key",
    "verify_live_token",
]

#: Version of the token layout (the ``v`` claim).
LIVE_TOKEN_VERSION = 1

#: Shortest accepted secret: HMAC-SHA256 wants at least 128 bits of key.
MIN_SECRET_BYTES = 16

#: Longest accepted lifetime; a "short-lived" token that lasts a day is not.
MAX_TTL_S = 3600.0

#: Longest accepted token text (a few thousand patients still fit).
MAX_TOKEN_CHARS = 16_384


class LiveTokenError(Exception):
    """A ``/live`` token was refused."""


class InvalidLiveTokenError(LiveTokenError):
    """The token is missing, malformed, or its signature does not match (forged)."""


class ExpiredLiveTokenError(LiveTokenError):
    """The token's signature is valid but its lifetime is over."""


@dataclass(frozen=True)
class LiveClaims:
    """What a valid token grants.

    Attributes
    ----------
    user_id : int
        The dashboard user the token was issued to.
    patient_ids : frozenset of int
        The patients the user may watch.
    issued_at, expires_at : float
        Seconds since the epoch.
    """

    user_id: int
    patient_ids: frozenset[int]
    issued_at: float
    expires_at: float

    def allows(self, patient_id: int) -> bool:
        """Whether the token's scope includes ``patient_id``."""
        return patient_id in self.patient_ids


def issue_live_token(
    secret: str | bytes,
    user_id: int,
    patient_ids: Iterable[int],
    ttl_s: float = 60.0,
    *,
    now: float | None = None,
) -> str:
    """Sign a token for ``user_id`` that allows watching ``patient_ids``.

    Parameters
    ----------
    secret : str or bytes
        Shared with the ingest server; at least 16 bytes.
    user_id : int
        The logged-in user.
    patient_ids : iterable of int
        The patients that user may see (may be empty: the token then
        allows nothing, which the server reports as out of scope).
    ttl_s : float
        Lifetime in seconds, more than 0 and at most one hour.
    now : float, optional
        Current time, seconds since the epoch (default: ``time.time()``).

    Returns
    -------
    str
        URL-safe text: ``<claims>.<signature>``.

    Raises
    ------
    ValueError
        For a short secret, a non-positive or too long ``ttl_s``, or ids
        that are not non-negative integers.

    Examples
    --------
    >>> token = issue_live_token("s" * 32, 7, [1, 2], 60, now=1000.0)
    >>> sorted(verify_live_token("s" * 32, token, now=1030.0).patient_ids)
    [1, 2]
    """
    key = live_secret_key(secret)
    now = time.time() if now is None else now
    if not (math.isfinite(ttl_s) and 0 < ttl_s <= MAX_TTL_S):
        raise ValueError(f"`ttl_s` must be in (0, {MAX_TTL_S:g}] seconds, got {ttl_s}")
    if not math.isfinite(now):
        raise ValueError(f"`now` must be a finite time, got {now}")
    ids = sorted(set(patient_ids))
    for value in (user_id, *ids):
        if type(value) is not int or value < 0:
            raise ValueError(f"`user_id` and `patient_ids` must be non-negative integers, got {value!r}")
    claims = {"v": LIVE_TOKEN_VERSION, "sub": user_id, "pat": ids, "iat": now, "exp": now + ttl_s}
    body = _b64encode(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
    return f"{body}.{_b64encode(_sign(key, body))}"


def verify_live_token(secret: str | bytes, token: object, now: float) -> LiveClaims:
    """Check a token's signature and lifetime and return its claims.

    Parameters
    ----------
    secret : str or bytes
        The secret the token was signed with.
    token : object
        What the client sent; anything but a well-formed string is refused.
    now : float
        Current time, seconds since the epoch.

    Returns
    -------
    LiveClaims

    Raises
    ------
    InvalidLiveTokenError
        Missing, malformed, forged (bad signature) or of an unknown version.
    ExpiredLiveTokenError
        Validly signed but ``now`` is at or past its expiry.
    """
    key = live_secret_key(secret)
    if not isinstance(token, str) or not token:
        raise InvalidLiveTokenError("a live token is required")
    if len(token) > MAX_TOKEN_CHARS or not token.isascii() or token.count(".") != 1:
        raise InvalidLiveTokenError("the live token is malformed")
    body, signature = token.split(".")
    try:
        given = _b64decode(signature)
    except (binascii.Error, ValueError) as exc:
        raise InvalidLiveTokenError("the live token's signature is malformed") from exc
    if not hmac.compare_digest(given, _sign(key, body)):
        raise InvalidLiveTokenError("the live token's signature does not match")
    claims = _parse_claims(body)
    if now >= claims.expires_at:
        raise ExpiredLiveTokenError(f"the live token expired {now - claims.expires_at:.0f} s ago")
    return claims


def live_secret_key(secret: str | bytes) -> bytes:
    """The HMAC key of a secret (UTF-8 for text).

    Raises
    ------
    ValueError
        If the secret is shorter than 16 bytes.
    """
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"`secret` must be at least {MIN_SECRET_BYTES} bytes, got {len(key)}")
    return key


# Internals -------------------------------------------------------------------


def _sign(key: bytes, body: str) -> bytes:
    return hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _parse_claims(body: str) -> LiveClaims:
    """Claims of a token whose signature was already verified."""
    try:
        obj = json.loads(_b64decode(body))
    except (binascii.Error, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidLiveTokenError("the live token's claims are malformed") from exc
    if not isinstance(obj, dict) or obj.get("v") != LIVE_TOKEN_VERSION:
        raise InvalidLiveTokenError(f"the live token is not of version {LIVE_TOKEN_VERSION}")
    user_id, ids = obj.get("sub"), obj.get("pat")
    if type(user_id) is not int or not isinstance(ids, list) or not all(type(i) is int for i in ids):
        raise InvalidLiveTokenError("the live token's claims have the wrong types")
    return LiveClaims(
        user_id=user_id,
        patient_ids=frozenset(ids),
        issued_at=_claim_time(obj, "iat"),
        expires_at=_claim_time(obj, "exp"),
    )


def _claim_time(obj: dict[str, object], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidLiveTokenError(f"the live token's `{key}` claim must be a number")
    return float(value)
