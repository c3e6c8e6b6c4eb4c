"""Authentication: argon2 password hashes, users, login throttling, the session user.

The pure parts (hashing, :class:`LoginThrottle`, :func:`is_user_activity`)
are plain functions and classes that the unit tests call directly; the
Flask wiring (login page, guard, CSRF, cookies) lives in
:mod:`dashboard.factory`, which :func:`dashboard.create_app` installs.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask_login import UserMixin
from sqlalchemy import func, select

from dashboard.access import normalize_ward
from storage import AuditEntry, Database, Role, User, append_audit, utcnow

__all__ = [
    "MIN_PASSWORD_CHARS",
    "AuditLoginThrottle",
    "AuthError",
    "LoginThrottle",
    "SessionUser",
    "authenticate",
    "create_user",
    "credential_fingerprint",
    "hash_password",
    "is_user_activity",
    "load_session_user",
    "session_id",
    "verify_password",
]

#: Shortest password :func:`create_user` accepts.
MIN_PASSWORD_CHARS = 10

# One hasher for the process: argon2id with the library's (RFC 9106 low-memory) defaults.
_HASHER = PasswordHasher()

# A hash of a random string: verifying against it when the user does not exist
# makes a failed login take as long for unknown and known usernames.
_DUMMY_HASH = _HASHER.hash("no such user: constant-time padding")


class AuthError(ValueError):
    """A user could not be created (bad name, weak password, taken name)."""


def hash_password(password: str) -> str:
    """Hash a password with argon2id (salted, self-describing PHC string).

    Raises
    ------
    AuthError
        If ``password`` is shorter than :data:`MIN_PASSWORD_CHARS`.

    Examples
    --------
    >>> verify_password(hash_password("correct horse battery"), "correct horse battery")
    True
    """
    if len(password) < MIN_PASSWORD_CHARS:
        raise AuthError(f"`password` must have at least {MIN_PASSWORD_CHARS} characters, got {len(password)}")
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; malformed hashes never match."""
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def create_user(
    db: Database,
    username: str,
    password: str,
    role: Role | str,
    *,
    display_name: str = "",
    actor: str = "cli",
    ward: str | None = None,
) -> int:
    """Create a user with an argon2 hash of ``password`` (the CLI's ``user add``).

    Parameters
    ----------
    db : Database
        Initialised database.
    username : str
        1-64 printable characters without spaces; unique, case-insensitive.
    password : str
        At least :data:`MIN_PASSWORD_CHARS` characters; only its hash is stored.
    role : Role or {"admin", "clinician", "caregiver"}
        What the user may do.
    display_name : str
        Shown in the dashboard (default: the username).
    actor : str
        Who creates the user, for the audit log (``"cli"``, ``"user:1"``).
    ward : str, optional
        The clinician's ward (stripped, at most 64 characters); ``None`` or
        blank for none, which lets a clinician see every patient (see
        :mod:`dashboard.access`). Stored for any role; only clinicians are
        scoped by it.

    Returns
    -------
    int
        The new user's id.

    Raises
    ------
    AuthError
        For an invalid or taken username, a weak password or an unknown role.
    """
    name = username.strip()
    if not (1 <= len(name) <= 64) or not name.isprintable() or " " in name:
        raise AuthError(f"`username` must be 1-64 printable characters without spaces, got {username!r}")
    try:
        chosen = Role(role)
    except ValueError as exc:
        raise AuthError(f"`role` must be one of {[r.value for r in Role]}, got {role!r}") from exc
    password_hash = hash_password(password)
    with db.session() as session:
        taken = session.scalar(select(User.id).where(func.lower(User.username) == name.lower()))
        if taken is not None:
            raise AuthError(f"the username {name!r} is taken")
        user = User(
            username=name,
            display_name=display_name or name,
            password_hash=password_hash,
            role=chosen,
            ward=normalize_ward(ward),
        )
        session.add(user)
        session.flush()
        append_audit(
            session,
            actor,
            "user.create",
            target=f"user:{user.id}",
            details={"role": chosen.value, "ward": user.ward},
        )
        return user.id


@dataclass(frozen=True)
class SessionUser(UserMixin):
    """The logged-in user as Flask-Login sees it: plain values, no ORM object.

    Attributes
    ----------
    id : int
        The user's id (Flask-Login stores it in the session).
    username, display_name : str
        Names.
    role : Role
        Checked on the server for every action.
    """

    id: int
    username: str
    display_name: str
    role: Role
    #: Fingerprint of the password hash the session was opened under (see :func:`session_id`).
    credential: str = ""

    def get_id(self) -> str:
        """The session's user id for Flask-Login's cookie: ``"<id>.<credential>"``."""
        return f"{self.id}.{self.credential}"

    @property
    def actor(self) -> str:
        """How the audit log names this user."""
        return f"user:{self.id}"


def credential_fingerprint(password_hash: str) -> str:
    """A short fingerprint of a password hash (argon2 salts every hash, so any reset changes it)."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def session_id(db: Database, user_id: int) -> str | None:
    """The id a session of user ``user_id`` carries now (``None``: no such user).

    It binds the session to the password: once the password is reset, the
    sessions opened under the old one no longer load (:func:`load_session_user`).
    """
    with db.session() as session:
        user = session.get(User, user_id)
        return None if user is None else f"{user.id}.{credential_fingerprint(user.password_hash)}"


def load_session_user(db: Database, user_id: str) -> SessionUser | None:
    """The active user of a session's text id ``"<id>.<credential>"``, or ``None``.

    ``None`` too when the password changed since the session was opened, so
    a password reset ends the user's other sessions, as disabling them does.
    """
    number, _, credential = user_id.partition(".")
    if not number.isdigit() or not credential:
        return None
    with db.session() as session:
        user = session.get(User, int(number))
        if user is None or not user.is_active:
            return None
        current = credential_fingerprint(user.password_hash)
        if not hmac.compare_digest(credential, current):
            return None
        return SessionUser(user.id, user.username, user.display_name, Role(user.role), current)


@dataclass
class LoginThrottle:
    """Refuse logins for a key (username or address) after repeated failures.

    After ``max_failures`` failures within ``window_s`` seconds, the key is
    locked for ``lockout_s`` seconds; a success clears its failures. State is
    in memory, per process: a restart forgets it and several processes each
    count their own. The dashboard uses :class:`AuditLoginThrottle`, which
    reads the audit log instead; this one suits tests and tools without a
    database.

    Examples
    --------
    >>> throttle = LoginThrottle(max_failures=2, window_s=60, lockout_s=30, clock=lambda: 0.0)
    >>> throttle.failure("alice")
    >>> throttle.failure("alice")
    >>> throttle.locked("alice")
    True
    """

    max_failures: int = 5
    window_s: float = 900.0
    lockout_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict, repr=False)
    _locked_until: dict[str, float] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        _check_throttle(self.max_failures, self.window_s, self.lockout_s)

    def locked(self, *keys: str) -> bool:
        """Whether any of ``keys`` is locked now."""
        now = self.clock()
        with self._lock:
            return any(self._locked_until.get(key, -1.0) > now for key in keys)

    def failure(self, *keys: str) -> None:
        """Count a failed login against each key; lock those over the limit."""
        now = self.clock()
        with self._lock:
            for key in keys:
                times = self._failures.setdefault(key, deque())
                times.append(now)
                while times and times[0] <= now - self.window_s:
                    times.popleft()
                if len(times) >= self.max_failures:
                    self._locked_until[key] = now + self.lockout_s
                    times.clear()

    def success(self, *keys: str) -> None:
        """Forget the failures of ``keys`` after a successful login."""
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
                self._locked_until.pop(key, None)


@dataclass(frozen=True)
class AuditLoginThrottle:
    """Login throttling read from the audit log: it holds across processes and restarts.

    :func:`authenticate` writes an ``auth.login_failed`` entry (with the
    username and the client address) for every failure and an ``auth.login``
    entry for every success; this throttle counts them instead of keeping
    state of its own, so every dashboard process sharing the database sees
    the same failures, and a restart forgets none.

    A key is locked while at least ``max_failures`` failures for it, newer
    than ``window_s`` seconds and than its last successful login, are in
    the log and the newest of them is less than ``lockout_s`` seconds old.
    When the lockout ends, one more failure within the window locks the key
    again. Keys are ``"user:<name>"`` (case-insensitive) and
    ``"addr:<address>"``, as :func:`authenticate` passes them.

    Parameters
    ----------
    db : Database
        The database whose audit log :func:`authenticate` writes.
    max_failures : int
        Failures that lock a key (at least 1).
    window_s, lockout_s : float
        Positive durations in seconds.
    clock : callable
        The current time as an aware UTC datetime (tests pass a fixed one).

    Examples
    --------
    >>> throttle = AuditLoginThrottle(db, max_failures=5, window_s=900, lockout_s=300)  # doctest: +SKIP
    >>> throttle.locked("user:alice", "addr:10.0.0.7")  # doctest: +SKIP
    False
    """

    db: Database
    max_failures: int = 5
    window_s: float = 900.0
    lockout_s: float = 300.0
    clock: Callable[[], datetime] = utcnow

    def __post_init__(self) -> None:
        _check_throttle(self.max_failures, self.window_s, self.lockout_s)

    def locked(self, *keys: str) -> bool:
        """Whether any of ``keys`` is locked now.

        Raises
        ------
        ValueError
            For a key that is neither ``"user:..."`` nor ``"addr:..."``.
        """
        now = self.clock()
        since = now - timedelta(seconds=self.window_s)
        with self.db.session() as session:
            for key in keys:
                kind, _, value = key.partition(":")
                if kind == "user":
                    match = func.lower(AuditEntry.details["username"].as_string()) == value.lower()
                elif kind == "addr":
                    match = AuditEntry.details["remote"].as_string() == value
                else:
                    raise ValueError(f"throttle keys must start with 'user:' or 'addr:', got {key!r}")
                rows = session.execute(
                    select(AuditEntry.action, AuditEntry.at)
                    .where(AuditEntry.at >= since, AuditEntry.action.in_(_LOGIN_ACTIONS), match)
                    .order_by(AuditEntry.at, AuditEntry.id)
                ).all()
                failures: list[datetime] = []
                for action, at in rows:
                    if action == "auth.login":
                        failures.clear()  # a success ends the run of failures
                    else:
                        failures.append(at)
                if (
                    len(failures) >= self.max_failures
                    and (now - failures[-1]).total_seconds() < self.lockout_s
                ):
                    return True
        return False

    def failure(self, *keys: str) -> None:
        """Nothing to keep: :func:`authenticate`'s ``auth.login_failed`` entry is the record."""

    def success(self, *keys: str) -> None:
        """Nothing to keep: the ``auth.login`` entry ends the run of failures."""


# The audit actions AuditLoginThrottle reads.
_LOGIN_ACTIONS = ("auth.login", "auth.login_failed")


def authenticate(
    db: Database,
    username: str,
    password: str,
    *,
    throttle: LoginThrottle | AuditLoginThrottle,
    remote: str,
) -> tuple[SessionUser | None, str]:
    """Check a login attempt, throttle and audit it.

    Parameters
    ----------
    db : Database
        Where the users are.
    username, password : str
        What the form sent.
    throttle : LoginThrottle or AuditLoginThrottle
        Failure counter, keyed by username and by remote address. Failures
        and successes are audited either way, with the username and the
        address, which is what :class:`AuditLoginThrottle` counts.
    remote : str
        Client address, for throttling and the audit log.

    Returns
    -------
    (SessionUser or None, str)
        The user on success, and a message for the login page (the same for
        unknown users and wrong passwords).
    """
    name = username.strip()
    keys = (f"user:{name.lower()}", f"addr:{remote}")
    if throttle.locked(*keys):
        _audit(db, "anonymous", "auth.login_throttled", {"username": name[:64], "remote": remote})
        return None, "Too many failed attempts. Try again in a few minutes."
    with db.session() as session:
        user = session.scalar(select(User).where(func.lower(User.username) == name.lower()))
        stored = user.password_hash if user is not None and user.is_active else _DUMMY_HASH
        ok = verify_password(stored, password) and user is not None and user.is_active
        if not ok or user is None:
            append_audit(
                session, "anonymous", "auth.login_failed", details={"username": name[:64], "remote": remote}
            )
            throttle.failure(*keys)
            return None, "Wrong username or password."
        if _HASHER.check_needs_rehash(user.password_hash):
            user.password_hash = _HASHER.hash(password)
        append_audit(
            session, f"user:{user.id}", "auth.login", details={"username": name[:64], "remote": remote}
        )
        found = SessionUser(
            user.id,
            user.username,
            user.display_name,
            Role(user.role),
            credential_fingerprint(user.password_hash),
        )
    throttle.success(*keys)
    return found, ""


def is_user_activity(path: str, payload: Mapping[str, Any] | None) -> bool:
    """Whether a request is the user's doing, for the idle timeout.

    Page loads and callbacks that a person triggers count; callbacks fired
    only by ``dcc.Interval`` timers (``*.n_intervals``) do not, so a screen
    left open does not keep its session alive for ever.
    """
    if not path.startswith("/_dash-update-component"):
        return True
    changed = (payload or {}).get("changedPropIds") or []
    return not changed or any(not str(prop).endswith(".n_intervals") for prop in changed)


def _check_throttle(max_failures: int, window_s: float, lockout_s: float) -> None:
    """Validate the settings both throttles share (the messages name the argument)."""
    if max_failures < 1:
        raise ValueError(f"`max_failures` must be at least 1, got {max_failures}")
    if window_s <= 0 or lockout_s <= 0:
        raise ValueError(f"`window_s` and `lockout_s` must be positive, got {window_s} and {lockout_s}")


def _audit(db: Database, actor: str, action: str, details: Mapping[str, Any]) -> None:
    with db.session() as session:
        append_audit(session, actor, action, details=details)
