"""Passwords, users, login throttling and the idle-timeout rule (no browser)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from dashboard.auth import (
    AuditLoginThrottle,
    AuthError,
    LoginThrottle,
    authenticate,
    create_user,
    hash_password,
    is_user_activity,
    load_session_user,
    verify_password,
)
from storage import AuditEntry, Database, Role, User, utcnow


class TestHashPassword:
    def test_basic(self) -> None:
        stored = hash_password("correct horse battery")
        assert stored.startswith("$argon2id$")
        assert verify_password(stored, "correct horse battery")
        assert not verify_password(stored, "wrong horse battery")

    def test_edge_cases(self) -> None:
        assert hash_password("same password!") != hash_password("same password!")  # salted
        assert not verify_password("not a hash", "whatever")

    def test_exceptions(self) -> None:
        with pytest.raises(AuthError, match="at least 10 characters"):
            hash_password("short")


class TestCreateUser:
    def test_basic(self, db: Database, sid: Callable[[int], str]) -> None:
        user_id = create_user(db, "alice", "correct horse battery", "clinician", display_name="Dr Alice")
        with db.session() as session:
            user = session.get(User, user_id)
            assert user is not None
            assert user.role == Role.CLINICIAN
            assert "correct horse" not in user.password_hash
            audit = session.scalars(select(AuditEntry)).all()
        assert [(a.actor, a.action, a.target) for a in audit] == [("cli", "user.create", f"user:{user_id}")]
        loaded = load_session_user(db, sid(user_id))
        assert loaded is not None
        assert loaded.display_name == "Dr Alice"

    def test_edge_cases(self, db: Database) -> None:
        assert load_session_user(db, "999") is None  # no credential
        assert load_session_user(db, "999.0123456789abcdef") is None
        assert load_session_user(db, "not-a-number") is None

    def test_exceptions(self, db: Database) -> None:
        create_user(db, "bob", "correct horse battery", Role.ADMIN)
        with pytest.raises(AuthError, match="taken"):
            create_user(db, "BOB", "correct horse battery", "admin")
        with pytest.raises(AuthError, match="role"):
            create_user(db, "carol", "correct horse battery", "superuser")
        with pytest.raises(AuthError, match="username"):
            create_user(db, "with space", "correct horse battery", "admin")


class TestLoginThrottle:
    def test_basic(self) -> None:
        now = [0.0]
        throttle = LoginThrottle(max_failures=3, window_s=60, lockout_s=30, clock=lambda: now[0])
        for _ in range(2):
            throttle.failure("user:a")
        assert not throttle.locked("user:a")
        throttle.failure("user:a")
        assert throttle.locked("user:a")
        now[0] = 31.0
        assert not throttle.locked("user:a")

    def test_edge_cases(self) -> None:
        now = [0.0]
        throttle = LoginThrottle(max_failures=2, window_s=10, lockout_s=30, clock=lambda: now[0])
        throttle.failure("k")
        now[0] = 11.0  # the first failure has left the window
        throttle.failure("k")
        assert not throttle.locked("k")
        throttle.failure("k")
        assert throttle.locked("k")
        throttle.success("k")
        assert not throttle.locked("k")

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="max_failures"):
            LoginThrottle(max_failures=0)
        with pytest.raises(ValueError, match="lockout_s"):
            LoginThrottle(lockout_s=0)


class TestAuditLoginThrottle:
    """The throttle the dashboard uses: failures counted in the audit log, shared by processes."""

    def test_basic(self, db: Database) -> None:
        create_user(db, "alice", "correct horse battery", "clinician")
        first = AuditLoginThrottle(db, max_failures=3, window_s=900, lockout_s=300)
        for _ in range(3):
            user, _ = authenticate(db, "alice", "wrong password!", throttle=first, remote="10.0.0.1")
            assert user is None
        # Another process, or the same one after a restart: a new throttle on the same database.
        restarted = AuditLoginThrottle(db, max_failures=3, window_s=900, lockout_s=300)
        assert restarted.locked("user:ALICE")
        assert restarted.locked("addr:10.0.0.1")
        assert not restarted.locked("user:bob", "addr:10.0.0.2")
        user, message = authenticate(
            db, "alice", "correct horse battery", throttle=restarted, remote="10.0.0.9"
        )
        assert user is None  # the right password does not get through a lockout
        assert "Too many failed attempts" in message
        with db.session() as session:
            actions = [a.action for a in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
        assert actions[-1] == "auth.login_throttled"

    def test_edge_cases(self, db: Database) -> None:
        create_user(db, "alice", "correct horse battery", "clinician")
        now = [utcnow()]
        throttle = AuditLoginThrottle(db, max_failures=2, window_s=600, lockout_s=60, clock=lambda: now[0])
        authenticate(db, "alice", "wrong password!", throttle=throttle, remote="a")
        assert not throttle.locked("user:alice")  # one failure of two
        user, _ = authenticate(db, "alice", "correct horse battery", throttle=throttle, remote="a")
        assert user is not None
        authenticate(db, "alice", "wrong password!", throttle=throttle, remote="a")
        assert not throttle.locked("user:alice")  # the success ended the earlier run
        authenticate(db, "alice", "wrong password!", throttle=throttle, remote="a")
        assert throttle.locked("user:alice")
        now[0] = utcnow() + timedelta(seconds=61)
        assert not throttle.locked("user:alice")  # the lockout is over
        now[0] = utcnow() + timedelta(seconds=601)
        assert not throttle.locked("user:alice", "addr:a")  # and the failures have left the window

    def test_exceptions(self, db: Database) -> None:
        with pytest.raises(ValueError, match="max_failures"):
            AuditLoginThrottle(db, max_failures=0)
        with pytest.raises(ValueError, match="window_s"):
            AuditLoginThrottle(db, window_s=-1)
        with pytest.raises(ValueError, match="must start with 'user:' or 'addr:'"):
            AuditLoginThrottle(db).locked("alice")


class TestAuthenticate:
    def test_basic(self, db: Database) -> None:
        create_user(db, "alice", "correct horse battery", "clinician")
        throttle = LoginThrottle()
        user, message = authenticate(
            db, "Alice", "correct horse battery", throttle=throttle, remote="10.0.0.1"
        )
        assert user is not None
        assert message == ""
        bad, message = authenticate(db, "alice", "nope nope nope", throttle=throttle, remote="10.0.0.1")
        assert bad is None
        assert message == "Wrong username or password."
        unknown, same = authenticate(db, "nobody", "nope nope nope", throttle=throttle, remote="10.0.0.1")
        assert unknown is None
        assert same == message  # unknown users and wrong passwords look the same
        with db.session() as session:
            actions = [a.action for a in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
        assert actions == ["user.create", "auth.login", "auth.login_failed", "auth.login_failed"]
        with db.session() as session:
            login = session.scalars(select(AuditEntry).where(AuditEntry.action == "auth.login")).one()
        assert login.details == {"username": "Alice", "remote": "10.0.0.1"}

    def test_edge_cases(self, db: Database) -> None:
        create_user(db, "alice", "correct horse battery", "clinician")
        throttle = LoginThrottle(max_failures=2)
        for _ in range(2):
            authenticate(db, "alice", "wrong password!", throttle=throttle, remote="1.2.3.4")
        user, message = authenticate(
            db, "alice", "correct horse battery", throttle=throttle, remote="5.6.7.8"
        )
        assert user is None  # locked by username even from another address
        assert "Too many failed attempts" in message

    def test_exceptions(self, db: Database) -> None:
        user_id = create_user(db, "eve", "correct horse battery", "caregiver")
        with db.session() as session:
            user = session.get(User, user_id)
            assert user is not None
            user.is_active = False
        user, _ = authenticate(db, "eve", "correct horse battery", throttle=LoginThrottle(), remote="x")
        assert user is None


class TestIsUserActivity:
    def test_basic(self) -> None:
        assert is_user_activity("/alarms", None)
        assert is_user_activity("/_dash-update-component", {"changedPropIds": ["ack-note.value"]})
        assert not is_user_activity(
            "/_dash-update-component", {"changedPropIds": ["central-refresh.n_intervals"]}
        )

    def test_edge_cases(self) -> None:
        assert is_user_activity("/_dash-update-component", {})  # an initial call: the page was just opened
        mixed = {"changedPropIds": ["alarms-refresh.n_intervals", "alarm-since.value"]}
        assert is_user_activity("/_dash-update-component", mixed)
