"""Bearer tokens of EHR systems that read the FHIR API: issue, verify, revoke.

A token is a random secret shown once, when an administrator issues it;
only its SHA-256 (:func:`storage.queries.hash_token`, as for devices) is
stored in :class:`~storage.models.ApiToken`. A token may be scoped to a
ward; a revoked token is refused for ever. Issuing and revoking write the
audit log, in the caller's transaction like every function of
:mod:`storage.queries`.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import ApiToken
from storage.queries import append_audit, hash_token
from storage.types import utcnow

__all__ = [
    "API_TOKEN_PREFIX",
    "issue_api_token",
    "list_api_tokens",
    "revoke_api_token",
    "verify_api_token",
]

#: Every API token starts with this, so secret scanners and people can tell what it is.
API_TOKEN_PREFIX = "cmfhir_"

_MAX_NAME_CHARS = 128
_MAX_WARD_CHARS = 64


def issue_api_token(
    session: Session,
    name: str,
    *,
    actor: str,
    ward: str | None = None,
    created_by_id: int | None = None,
) -> tuple[ApiToken, str]:
    """Create a named token and return it with its secret, which is never stored.

    Parameters
    ----------
    session : Session
        Open session; the caller commits.
    name : str
        1-128 printable characters naming the client (``"ehr-prod"``); unique.
    actor : str
        Who issues it, for the audit log (``"user:1"``, ``"cli"``).
    ward : str, optional
        Ward whose patients the token may read; ``None`` or blank: every patient.
    created_by_id : int, optional
        The issuing user.

    Returns
    -------
    (ApiToken, str)
        The stored row and the token to hand to the client, once.

    Raises
    ------
    ValueError
        For an invalid or taken ``name``.
    """
    clean = name.strip()
    if not (1 <= len(clean) <= _MAX_NAME_CHARS) or not clean.isprintable():
        raise ValueError(f"`name` must be 1-{_MAX_NAME_CHARS} printable characters, got {name!r}")
    if session.scalar(select(ApiToken.id).where(ApiToken.name == clean)) is not None:
        raise ValueError(f"an API token named {clean!r} exists already; revoke it or choose another name")
    secret = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    scope = (ward or "").strip()[:_MAX_WARD_CHARS] or None
    row = ApiToken(name=clean, token_hash=hash_token(secret), ward=scope, created_by_id=created_by_id)
    session.add(row)
    session.flush()
    append_audit(session, actor, "api_token.issue", target=f"api_token:{clean}", details={"ward": scope})
    return row, secret


def revoke_api_token(session: Session, name: str, *, actor: str, at: datetime | None = None) -> ApiToken:
    """Revoke the token called ``name``; revoking a revoked token changes nothing.

    Raises
    ------
    LookupError
        If no token has that name.
    """
    row = session.scalar(select(ApiToken).where(ApiToken.name == name.strip()))
    if row is None:
        raise LookupError(f"no API token named {name!r}")
    if row.revoked_at is None:
        row.revoked_at = at or utcnow()
        append_audit(session, actor, "api_token.revoke", target=f"api_token:{row.name}", at=row.revoked_at)
    return row


def verify_api_token(session: Session, token: str, *, at: datetime | None = None) -> ApiToken | None:
    """The live token row matching ``token`` (its use time updated), or ``None``.

    Unknown and revoked tokens both give ``None``; the lookup is by hash, so
    the secret itself is never compared or stored.
    """
    if not token.startswith(API_TOKEN_PREFIX):
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        return None
    row.last_used_at = at or utcnow()
    return row


def list_api_tokens(session: Session) -> list[ApiToken]:
    """Every token, live and revoked, by name."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.name)))
