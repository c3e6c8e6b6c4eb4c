"""Read-only FHIR R4B API: ``GET /fhir/{Patient|Device|Observation|DiagnosticReport}``.

Every search answers a ``searchset`` Bundle of the resources that
:mod:`storage.fhir` builds, as ``application/fhir+json``. Search
parameters:

``patient``
    ``123`` or ``Patient/123``. Required, except for ``Patient``, where
    without it every patient in the caller's scope is listed.
``date``
    Repeatable, with the prefixes ``ge``, ``gt``, ``le``, ``lt`` or ``eq``
    (none: ``eq``) and any FHIR precision (``2026-01-01``,
    ``2026-01-01T12:00:00Z``); a time needs a zone; dates are UTC days.
    ``Observation`` and ``DiagnosticReport`` need a lower and an upper
    bound (at most :data:`storage.MAX_WAVEFORM_SPAN` apart for
    Observations, which carry the ECG); ``Device`` takes an optional one;
    ``Patient`` ignores it.
``_count``, ``_offset``
    Paging: at most ``_count`` entries (default :data:`DEFAULT_PAGE`, at
    most :data:`MAX_PAGE`; ``0`` answers the ``total`` alone) from match
    number ``_offset`` (default 0). ``total`` counts every match, and the
    Bundle links the ``next`` and ``previous`` pages.

Who may read (checked on the server, for every request):

* an EHR system, with ``Authorization: Bearer <token>`` issued by an
  administrator (:func:`storage.issue_api_token`); the token's ward scopes
  it like a clinician's (none: every patient); a bad or revoked token is
  ``401`` even when the request also carries a session;
* a logged-in user whose role may export (:func:`dashboard.access.can_export`:
  clinicians and admins), scoped by :func:`dashboard.access.visible_patients`.

Anything else is ``401`` with an OperationOutcome; a patient outside the
caller's scope (or that does not exist: the same answer, so ids cannot be
probed) is ``403``. Every search is written to the audit log: who, which
resource type, patient, range and how many resources.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import urlencode

import flask
from fhir.resources.R4B.operationoutcome import OperationOutcome, OperationOutcomeIssue
from fhir.resources.R4B.resource import Resource
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from dashboard.access import can_export, current_db, visible_patient_ids, visible_patients
from storage import (
    FHIR_JSON,
    RESOURCE_TYPES,
    Patient,
    Role,
    append_audit,
    device_resources,
    export_resources,
    patient_resource,
    searchset_bundle,
    verify_api_token,
)

__all__ = [
    "DEFAULT_PAGE",
    "FHIR_PREFIX",
    "MAX_PAGE",
    "FhirSearchError",
    "bearer_token",
    "operation_outcome",
    "parse_date_params",
    "parse_patient_param",
    "register_fhir_api",
]

#: Where the API is mounted.
FHIR_PREFIX = "/fhir"

#: Entries of a page when the search does not say (``_count``), and the most it may ask for.
DEFAULT_PAGE = 100
MAX_PAGE = 1000

_PARAMETERS = frozenset({"patient", "date", "_format", "_count", "_offset"})
_JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json"})
_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d{1,6})?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_PREFIXES = ("eq", "ge", "gt", "le", "lt")


class FhirSearchError(ValueError):
    """A search request that cannot be answered as asked (``400``)."""


def register_fhir_api(server: flask.Flask) -> None:
    """Mount the read-only FHIR API under :data:`FHIR_PREFIX` on the dashboard's server.

    The factory's guard lets ``/fhir/...`` requests through without a
    session; the blueprint authenticates them itself (bearer token or
    session) before any view runs.
    """
    blueprint = flask.Blueprint("fhir", __name__, url_prefix=FHIR_PREFIX)
    blueprint.before_request(_authenticate)
    blueprint.add_url_rule("/<resource_type>", view_func=_search, methods=["GET"])
    server.register_blueprint(blueprint)


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``.

    Examples
    --------
    >>> bearer_token("Bearer abc"), bearer_token("Basic abc"), bearer_token(None)
    ('abc', None, None)
    """
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def parse_patient_param(value: str | None) -> int | None:
    """The patient id of a ``patient`` parameter (``123`` or ``Patient/123``); ``None`` if absent.

    Raises
    ------
    FhirSearchError
        If the value is not a patient id.
    """
    if value is None:
        return None
    text = value.strip().removeprefix("Patient/")
    if not text.isdigit() or len(text) > 18:
        raise FhirSearchError(f"`patient` must be a patient id such as 123 or Patient/123, got {value!r}")
    return int(text)


def parse_date_params(values: Sequence[str]) -> tuple[datetime | None, datetime | None]:
    """The window ``[start, end)`` that ``date`` parameters ask for (either side ``None`` if open).

    Each value is read at its precision: ``le2026-01-01`` includes that
    whole (UTC) day, ``ge2026-01-01T12:00:00Z`` starts at that second.

    Raises
    ------
    FhirSearchError
        For an unknown prefix, a malformed date, a time without a zone, or
        bounds that leave an empty window.

    Examples
    --------
    >>> start, end = parse_date_params(["ge2026-01-01", "lt2026-01-01T06:00:00Z"])
    >>> start.isoformat(), end.isoformat()
    ('2026-01-01T00:00:00+00:00', '2026-01-01T06:00:00+00:00')
    """
    start: datetime | None = None
    end: datetime | None = None
    for raw in values:
        value = raw.strip()
        prefix = value[:2] if value[:2].isalpha() else "eq"
        text = value[2:] if value[:2].isalpha() else value
        if prefix not in _PREFIXES:
            raise FhirSearchError(f"`date` prefix {prefix!r} is not supported; use one of {list(_PREFIXES)}")
        low, high = _date_interval(text)
        lower = {"ge": low, "gt": high, "eq": low}.get(prefix)
        upper = {"le": high, "lt": low, "eq": high}.get(prefix)
        if lower is not None:
            start = lower if start is None else max(start, lower)
        if upper is not None:
            end = upper if end is None else min(end, upper)
    if start is not None and end is not None and not end > start:
        raise FhirSearchError(f"`date` bounds leave an empty window: {', '.join(values)}")
    return start, end


def operation_outcome(code: str, diagnostics: str, *, severity: str = "error") -> OperationOutcome:
    """An OperationOutcome with one issue (``code`` from the FHIR issue-type value set)."""
    return OperationOutcome(
        issue=[OperationOutcomeIssue(severity=severity, code=code, diagnostics=diagnostics)]
    )


# Internals -------------------------------------------------------------------


@dataclass(frozen=True)
class _Caller:
    """Who is asking: a bearer token (scoped by ward) or a session user (scoped by role)."""

    actor: str
    ward: str | None = None
    user_id: int | None = None
    role: Role | None = None

    def patient_ids(self, session: Session) -> frozenset[int]:
        """The patients this caller may read."""
        if self.user_id is not None and self.role is not None:
            return frozenset(p.id for p in visible_patients(session, self.user_id, self.role))
        wards: dict[int, str | None] = {
            pid: ward for pid, ward in session.execute(select(Patient.id, Patient.ward))
        }
        # A token is scoped like a clinician of its ward; no ward: every patient.
        return visible_patient_ids(Role.CLINICIAN, wards.keys(), (), ward=self.ward, patient_wards=wards)


def _authenticate() -> Response | None:
    """Set ``g.fhir_caller`` from a bearer token or the session, or refuse with 401/403."""
    request = flask.request
    header = request.headers.get("Authorization")
    if header is not None:
        token = bearer_token(header)
        with current_db().session() as session:
            row = verify_api_token(session, token) if token is not None else None
            if row is None:
                append_audit(
                    session,
                    "anonymous",
                    "fhir.token_refused",
                    details={"remote": request.remote_addr or "?", "path": request.path[:128]},
                )
                return _outcome(401, "login", "the bearer token is missing, unknown or revoked")
            flask.g.fhir_caller = _Caller(actor=f"api_token:{row.name}", ward=row.ward)
        return None
    if current_user.is_authenticated:
        if not can_export(current_user.role):
            return _outcome(403, "forbidden", "your role may not read the FHIR API")
        flask.g.fhir_caller = _Caller(
            actor=current_user.actor, user_id=current_user.id, role=current_user.role
        )
        return None
    return _outcome(401, "login", "log in, or send an API token as Authorization: Bearer <token>")


def _search(resource_type: str) -> Response:
    """Answer one search with a searchset Bundle."""
    caller: _Caller = flask.g.fhir_caller
    if resource_type not in RESOURCE_TYPES:
        return _outcome(
            404, "not-supported", f"resource type {resource_type!r}: this API serves {list(RESOURCE_TYPES)}"
        )
    args = flask.request.args
    try:
        unknown = sorted(set(args) - _PARAMETERS)
        if unknown:
            raise FhirSearchError(
                f"unsupported search parameters {unknown}; supported: patient, date, _count, _offset"
            )
        if args.get("_format", "json") not in _JSON_FORMATS:
            raise FhirSearchError(f"`_format` must be json, got {args.get('_format')!r}")
        count = _int_param(args.get("_count"), "_count", DEFAULT_PAGE, high=MAX_PAGE)
        offset = _int_param(args.get("_offset"), "_offset", 0)
        patient_id = parse_patient_param(args.get("patient"))
        start, end = parse_date_params(args.getlist("date"))
        if patient_id is None and resource_type != "Patient":
            raise FhirSearchError(f"searching {resource_type} needs `patient`")
        if resource_type in ("Observation", "DiagnosticReport") and (start is None or end is None):
            raise FhirSearchError(f"searching {resource_type} needs `date` with a lower and an upper bound")
    except FhirSearchError as exc:
        return _outcome(400, "invalid", str(exc))
    with current_db().session() as session:
        allowed = caller.patient_ids(session)
        if patient_id is not None and patient_id not in allowed:
            append_audit(
                session,
                caller.actor,
                "fhir.refused",
                target=f"patient:{patient_id}",
                details={"type": resource_type},
            )
            return _outcome(403, "forbidden", f"patient {patient_id} is not available to you")
        try:
            resources = _find(session, resource_type, patient_id, start, end, allowed)
        except ValueError as exc:  # a span too long for one answer
            return _outcome(400, "invalid", str(exc))
        page = resources[offset : offset + count]
        append_audit(
            session,
            caller.actor,
            "fhir.search",
            target=f"patient:{patient_id}" if patient_id is not None else None,
            details={
                "type": resource_type,
                "start": start.isoformat() if start else None,
                "end": end.isoformat() if end else None,
                "count": len(page),
                "total": len(resources),
            },
        )
    base_url = flask.request.url_root.rstrip("/") + FHIR_PREFIX
    links = {}
    if count > 0 and offset + count < len(resources):
        links["next"] = _page_url(offset + count, count)
    if count > 0 and offset > 0:
        links["previous"] = _page_url(max(0, offset - count), count)
    bundle = searchset_bundle(
        page,
        base_url=base_url,
        self_url=flask.request.url,
        total=len(resources),
        links=links,
    )
    return Response(bundle.model_dump_json(), status=200, content_type=FHIR_JSON)


def _int_param(text: str | None, name: str, default: int, *, high: int | None = None) -> int:
    """A non-negative integer search parameter, at most ``high``."""
    if text is None:
        return default
    bound = f"from 0 to {high}" if high is not None else ">= 0"
    if not text.isdigit() or (high is not None and int(text) > high):
        raise FhirSearchError(f"`{name}` must be an integer {bound}, got {text!r}")
    return int(text)


def _page_url(offset: int, count: int) -> str:
    """This search's URL for the page of ``count`` entries from match ``offset``."""
    args = flask.request.args.to_dict(flat=False)
    args["_offset"], args["_count"] = [str(offset)], [str(count)]
    return f"{flask.request.base_url}?{urlencode(args, doseq=True)}"


def _find(
    session: Session,
    resource_type: str,
    patient_id: int | None,
    start: datetime | None,
    end: datetime | None,
    allowed: frozenset[int],
) -> list[Resource]:
    """The resources that match a validated search, inside the caller's scope."""
    if resource_type == "Patient":
        rows = session.scalars(select(Patient).where(Patient.id.in_(allowed)).order_by(Patient.id))
        return [patient_resource(p) for p in rows if patient_id is None or p.id == patient_id]
    if patient_id is None:
        raise FhirSearchError(f"searching {resource_type} needs `patient`")
    if resource_type == "Device":
        if (start is None) != (end is None):
            raise FhirSearchError("searching Device by `date` needs a lower and an upper bound")
        return list(device_resources(session, patient_id, start, end))
    if start is None or end is None:
        raise FhirSearchError(f"searching {resource_type} needs `date` with a lower and an upper bound")
    found = export_resources(session, patient_id, start, end, resource_types=[resource_type])
    return list(found)


def _outcome(status: int, code: str, diagnostics: str) -> Response:
    """An error answer: an OperationOutcome, with a ``WWW-Authenticate`` challenge on 401."""
    response = Response(
        operation_outcome(code, diagnostics).model_dump_json(), status=status, content_type=FHIR_JSON
    )
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="cardiac-monitor FHIR"'
    return response


def _date_interval(text: str) -> tuple[datetime, datetime]:
    """The interval ``[low, high)`` that a FHIR date or dateTime covers at its precision."""
    match = _DATE.fullmatch(text)
    if match is None:
        raise FhirSearchError(
            f"`date` must be a FHIR date or dateTime such as 2026-01-01T12:00:00Z, got {text!r}"
        )
    parts = match.groupdict()
    if parts["H"] is not None and parts["tz"] is None:
        raise FhirSearchError(f"a `date` with a time must carry a zone (Z or +hh:mm), got {text!r}")
    try:
        zone = _zone(parts["tz"])
        year, month, day = int(parts["y"]), int(parts["m"] or 1), int(parts["d"] or 1)
        low = datetime(
            year,
            month,
            day,
            int(parts["H"] or 0),
            int(parts["M"] or 0),
            int(parts["S"] or 0),
            int((parts["f"] or ".0")[1:].ljust(6, "0")),
            tzinfo=zone,
        ).astimezone(UTC)
    except ValueError as exc:
        raise FhirSearchError(f"`date` {text!r} is not a valid date: {exc}") from exc
    if parts["m"] is None:
        high = low.replace(year=low.year + 1)
    elif parts["d"] is None:
        high = low + timedelta(days=calendar.monthrange(year, month)[1])
    elif parts["H"] is None:
        high = low + timedelta(days=1)
    elif parts["S"] is None:
        high = low + timedelta(minutes=1)
    elif parts["f"] is None:
        high = low + timedelta(seconds=1)
    else:
        high = low + timedelta(microseconds=1)
    return low, high


def _zone(text: str | None) -> timezone:
    if text is None or text == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))
