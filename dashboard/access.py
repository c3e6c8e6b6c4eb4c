"""Who may see and do what: role rules as pure functions, checked on the server.

Rules
-----
* **admin**: manages users, patients, devices and alarm limits; sees every
  patient, read-only for alarms.
* **clinician**: sees the patients of the ward and acknowledges their
  alarms. The schema has no ward yet, so the ward is the whole unit: every
  patient.
* **caregiver**: sees only the patients assigned to them
  (:class:`~storage.CaregiverAssignment`), read-only.

Every Dash callback and Flask view asks these functions before it reads or
changes anything; hiding a button is only a courtesy.
"""

from __future__ import annotations

from collections.abc import Iterable

import flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import CaregiverAssignment, Database, Patient, Role

__all__ = [
    "AccessDeniedError",
    "can_acknowledge",
    "can_administer",
    "can_export",
    "check_patient",
    "current_db",
    "visible_patient_ids",
    "visible_patients",
]


class AccessDeniedError(PermissionError):
    """The user's role or scope does not allow the request."""


def visible_patient_ids(
    role: Role | str, all_ids: Iterable[int], assigned_ids: Iterable[int]
) -> frozenset[int]:
    """The patients a user may see.

    Parameters
    ----------
    role : Role or str
        The user's role.
    all_ids : iterable of int
        Every patient.
    assigned_ids : iterable of int
        The user's caregiver assignments.

    Returns
    -------
    frozenset of int
        Every patient for admins and clinicians, the assigned ones (that
        exist) for caregivers, nothing for an unknown role.

    Examples
    --------
    >>> sorted(visible_patient_ids("caregiver", [1, 2, 3], [2, 9]))
    [2]
    """
    everyone = frozenset(all_ids)
    if role in (Role.ADMIN, Role.CLINICIAN):
        return everyone
    if role == Role.CAREGIVER:
        return everyone & frozenset(assigned_ids)
    return frozenset()


def can_acknowledge(role: Role | str) -> bool:
    """Only clinicians acknowledge alarms."""
    return role == Role.CLINICIAN


def can_administer(role: Role | str) -> bool:
    """Only admins manage users, patients, devices and limits, and read the audit log."""
    return role == Role.ADMIN


def can_export(role: Role | str) -> bool:
    """Clinicians and admins export strips and CSV; caregivers only view."""
    return role in (Role.ADMIN, Role.CLINICIAN)


def visible_patients(session: Session, user_id: int, role: Role | str) -> list[Patient]:
    """The :class:`~storage.Patient` rows a user may see, by name."""
    patients = list(session.scalars(select(Patient).order_by(Patient.name, Patient.id)))
    assigned = session.scalars(
        select(CaregiverAssignment.patient_id).where(CaregiverAssignment.user_id == user_id)
    )
    allowed = visible_patient_ids(role, (p.id for p in patients), assigned)
    return [p for p in patients if p.id in allowed]


def check_patient(session: Session, user_id: int, role: Role | str, patient_id: int) -> Patient:
    """The patient, if the user may see them.

    Raises
    ------
    AccessDeniedError
        If the patient does not exist or is outside the user's scope (the
        same error, so that ids cannot be probed).
    """
    for patient in visible_patients(session, user_id, role):
        if patient.id == patient_id:
            return patient
    raise AccessDeniedError(f"patient {patient_id} is not available to user {user_id}")


def current_db() -> Database:
    """The database of the dashboard serving the current request (set by ``create_app``)."""
    db = flask.current_app.extensions.get("cardiac_db")
    if not isinstance(db, Database):
        raise RuntimeError("no dashboard database: build the app with dashboard.create_app")
    return db
