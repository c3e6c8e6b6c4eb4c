"""User administration: disable and enable, role and ward, password reset.

Each function checks on the server that the acting user is an active
admin, applies one change in one transaction and writes it to the audit
log (never the password). Two rules keep the site manageable: an admin
cannot disable or demote themselves, and the last active admin can be
neither disabled nor demoted. The second follows from the first for one
admin at a time; it is checked on its own, with the active admins' rows
locked (``SELECT ... FOR UPDATE`` where the database has it), so that two
admins disabling each other at the same moment cannot leave none.
Creating users is :func:`dashboard.auth.create_user`.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dashboard.access import AccessDeniedError, normalize_ward
from dashboard.auth import AuthError, hash_password
from storage import Database, Role, User, append_audit

__all__ = ["UserAdminError", "reset_password", "set_user_active", "set_user_role"]


class UserAdminError(ValueError):
    """A user change that the rules refuse (self-lockout, last admin, unknown user or role)."""


def set_user_active(db: Database, admin_id: int, user_id: int, active: bool) -> None:
    """Disable or enable a user's login; audited as ``user.disable`` / ``user.enable``.

    A disabled user's open sessions end at their next request (the session
    loader only loads active users).

    Parameters
    ----------
    db : Database
        The dashboard's database.
    admin_id : int
        The acting user; must be an active admin.
    user_id : int
        The user to change.
    active : bool
        ``False`` disables, ``True`` enables.

    Raises
    ------
    AccessDeniedError
        If ``admin_id`` is not an active admin.
    UserAdminError
        For an unknown user, an admin disabling themselves, or disabling the
        last active admin.
    """
    with db.session() as session:
        admins = _require_admin(session, admin_id)
        user = _get_user(session, user_id)
        if not active:
            if user.id == admin_id:
                raise UserAdminError("you cannot disable your own account")
            _keep_an_admin(admins, user)
        if user.is_active == active:
            return
        user.is_active = active
        append_audit(
            session, f"user:{admin_id}", "user.enable" if active else "user.disable", target=f"user:{user_id}"
        )


def set_user_role(db: Database, admin_id: int, user_id: int, role: Role | str, ward: str | None) -> None:
    """Change a user's role and ward; audited as ``user.update`` with before and after.

    Parameters
    ----------
    db : Database
        The dashboard's database.
    admin_id : int
        The acting user; must be an active admin.
    user_id : int
        The user to change.
    role : Role or {"admin", "clinician", "caregiver"}
        The new role.
    ward : str, optional
        The new ward (stripped, at most 64 characters); ``None`` or blank for none.

    Raises
    ------
    AccessDeniedError
        If ``admin_id`` is not an active admin.
    UserAdminError
        For an unknown user or role, an admin giving up their own admin role,
        or demoting the last active admin.
    """
    try:
        chosen = Role(role)
    except ValueError as exc:
        raise UserAdminError(f"`role` must be one of {[r.value for r in Role]}, got {role!r}") from exc
    with db.session() as session:
        admins = _require_admin(session, admin_id)
        user = _get_user(session, user_id)
        if chosen != Role.ADMIN and user.role == Role.ADMIN:
            if user.id == admin_id:
                raise UserAdminError("you cannot remove your own admin role")
            _keep_an_admin(admins, user)
        before = {"role": Role(user.role).value, "ward": user.ward}
        after = {"role": chosen.value, "ward": normalize_ward(ward)}
        if before == after:
            return
        user.role = chosen
        user.ward = after["ward"]
        append_audit(
            session,
            f"user:{admin_id}",
            "user.update",
            target=f"user:{user_id}",
            details={"before": before, "after": after},
        )


def reset_password(db: Database, admin_id: int, user_id: int, password: str) -> None:
    """Set a new password (argon2id, the same policy as ``user add``); audited without it.

    Raises
    ------
    AccessDeniedError
        If ``admin_id`` is not an active admin.
    UserAdminError
        For an unknown user, or a password that breaks the policy (at least
        :data:`dashboard.auth.MIN_PASSWORD_CHARS` characters).
    """
    try:
        password_hash = hash_password(password)
    except AuthError as exc:
        raise UserAdminError(str(exc)) from exc
    with db.session() as session:
        _require_admin(session, admin_id)
        user = _get_user(session, user_id)
        user.password_hash = password_hash
        append_audit(session, f"user:{admin_id}", "user.password_reset", target=f"user:{user_id}")


# Internals -------------------------------------------------------------------


def _require_admin(session: Session, admin_id: int) -> frozenset[int]:
    """The active admins' ids, their rows locked; refuse unless ``admin_id`` is one of them.

    The acting user's role is read again here, not trusted from the session.
    """
    admins = frozenset(
        session.scalars(
            select(User.id).where(User.role == Role.ADMIN, User.is_active.is_(True)).with_for_update()
        )
    )
    if admin_id not in admins:
        raise AccessDeniedError(f"user {admin_id} may not administer users")
    return admins


def _get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise UserAdminError(f"no user {user_id}")
    return user


def _keep_an_admin(admins: frozenset[int], user: User) -> None:
    """Refuse to take ``user`` out of the active admins (``admins``) if none would be left."""
    if user.id in admins and not admins - {user.id}:
        raise UserAdminError(f"{user.username} is the last active admin; make another admin first")
