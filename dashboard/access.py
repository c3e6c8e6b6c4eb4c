"""Who may see and do what: role rules as pure functions, checked on the server.

Rules
-----
* **admin**: manages users, patients, devices and alarm limits; sees every
  patient, read-only for alarms.
* **clinician**: sees the patients of their ward (``User.ward`` equals
  ``Patient.ward``, ignoring case and surrounding spaces) and acknowledges
  their alarms. A clinician with no ward sees every patient: a small site
  without wards leaves ``ward`` empty everywhere. A patient with no ward is
  seen only by admins and by clinicians without a ward.
* **caregiver**: sees only the patients assigned to them
  (:class:`~storage.CaregiverAssignment`), read-only.

Every Dash callback and Flask view asks these functions before it reads or
changes anything; hiding a button is only a courtesy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import CaregiverAssignment, Database, Patient, Role, User

__all__ = [
    "AccessDeniedError",
    "can_acknowledge",
    "can_administer",
    "can_export",
    "check_patient",
    "current_db",
    "normalize_ward",
    "visible_patient_ids",
    "visible_patients",
]


class AccessDeniedError(PermissionError):
    """The user's role or scope does not allow the request."""


def normalize_ward(ward: str | None) -> str | None:
    """A ward name as stored: stripped, at most 64 characters, ``None`` when empty.

    Examples
    --------
    >>> normalize_ward("  ICU 2 "), normalize_ward("   "), normalize_ward(None)
    ('ICU 2', None, None)
    """
    clean = (ward or "").strip()[:64]
    return clean or None


def visible_patient_ids(
    role: Role | str,
    all_ids: Iterable[int],
    assigned_ids: Iterable[int],
    *,
    ward: str | None = None,
    patient_wards: Mapping[int, str | None] | None = None,
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
    ward : str, optional
        The user's ward; ``None`` (or blank) for none.
    patient_wards : mapping of int to str or None, optional
        Each patient's ward (missing ids: no ward).

    Returns
    -------
    frozenset of int
        Every patient for admins and for clinicians without a ward, the
        patients of the ward for a clinician with one, the assigned ones
        (that exist) for caregivers, nothing for an unknown role.

    Examples
    --------
    >>> sorted(visible_patient_ids("caregiver", [1, 2, 3], [2, 9]))
    [2]
    >>> wards = {1: "ICU", 2: "CCU"}
    >>> sorted(visible_patient_ids("clinician", [1, 2, 3], [], ward="icu", patient_wards=wards))
    [1]
    """
    everyone = frozenset(all_ids)
    if role == Role.ADMIN:
        return everyone
    if role == Role.CLINICIAN:
        mine = _ward_key(ward)
        if mine is None:
            return everyone  # a site without wards: the unit is every patient
        wards = patient_wards or {}
        return frozenset(pid for pid in everyone if _ward_key(wards.get(pid)) == mine)
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
    """The :class:`~storage.Patient` rows a user may see, by name.

    Every list and every per-patient check of the dashboard goes through
    here (:func:`check_patient` too), so the scope rule lives in one place:
    :func:`visible_patient_ids`. The user's ward is read from the database
    on each call, so a changed ward applies at once.
    """
    patients = list(session.scalars(select(Patient).order_by(Patient.name, Patient.id)))
    assigned = session.scalars(
        select(CaregiverAssignment.patient_id).where(CaregiverAssignment.user_id == user_id)
    )
    ward = session.scalar(select(User.ward).where(User.id == user_id))
    allowed = visible_patient_ids(
        role,
        (p.id for p in patients),
        assigned,
        ward=ward,
        patient_wards={p.id: p.ward for p in patients},
    )
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


def _ward_key(ward: str | None) -> str | None:
    """What ward names are compared by: stripped and case-folded; ``None`` when blank."""
    clean = normalize_ward(ward)
    return clean.casefold() if clean is not None else None
