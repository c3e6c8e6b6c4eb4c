"""HL7 FHIR export of a patient's monitoring data, as validated ``fhir.resources`` models.

Every resource is built with the ``fhir.resources`` models, which validate
cardinalities, types and choice elements as they are built; nothing here
assembles JSON by hand. Serialise with ``resource.model_dump_json()`` and
read back with ``Model.model_validate_json(text)``.

FHIR version
------------
R4B (4.3.0), the ``fhir.resources.R4B`` models. The EHR systems that read
this export speak R4 (and their implementation guides, US Core, IPS and the
IHE point-of-care device profiles, are R4), and R4B is wire-compatible with
R4 for every resource emitted here: Patient, Device, Observation,
DiagnosticReport and Bundle. R5 would change two things that matter to an
R4 reader: ``SampledData.period`` became ``interval`` plus ``intervalUnit``,
and ``Device.patient`` moved to a separate DeviceAssociation resource.

What is emitted
---------------
* ``Patient/{id}``: name, MRN, birth date.
* ``Device/{id}``: each sensor that recorded the patient; ``Device/model-...``:
  the beat classifier, with its model version.
* ``Observation/ecg-{session}-{first_seq}``: the ECG, one Observation per
  contiguous run of samples (at most :data:`SEGMENT_SECONDS`), coded
  MDC_ECG_ELEC_POTL (131328), with one component per lead coded with the
  lead's MDC code (lead II: 131330) carrying ``valueSampledData``: ``data``
  are the stored ADC counts, ``factor`` = 1 / gain and ``origin`` =
  -baseline / gain in mV, so the export is lossless, and ``period`` is the
  sample interval in milliseconds (R4B's unit).
* ``Observation/vitals-{id}-{hr|pulse|spo2|temp}``: heart rate (LOINC
  8867-4, /min), pulse rate (8867-4 and 8889-8), SpO2 (LOINC 2708-6 and
  59408-5, %), body temperature (LOINC 8310-5, Cel); category vital-signs.
* ``Observation/beat-{id}``: each classified beat, its AAMI class as the
  value, the class probabilities as components, ``derivedFrom`` the ECG
  Observation that holds its R peak, ``device`` the classifier Device whose
  version is the model version (also in ``method``).
* ``Observation/alarm-{id}``: each alarm episode (kind, priority, state,
  detail), ``derivedFrom`` the ECG it overlaps.
* ``DiagnosticReport/alarm-{id}``: one per alarm event (LOINC 11524-6, EKG
  study), whose ``result`` groups the episode, the abnormal beats (class
  other than N), the vital signs and, when the ECG is exported with it,
  the ECG Observations of the alarm's time span.

Codes of this project (beat classes, probabilities, alarm kinds) use the
URN systems below; ``docs/fhir.md`` lists them.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
import numpy.typing as npt
from fhir.resources.R4B.bundle import Bundle, BundleEntry, BundleEntrySearch, BundleLink
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.device import Device as FhirDevice
from fhir.resources.R4B.device import DeviceDeviceName, DeviceVersion
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.humanname import HumanName
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.observation import Observation, ObservationComponent
from fhir.resources.R4B.patient import Patient as FhirPatient
from fhir.resources.R4B.period import Period
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.sampleddata import SampledData
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from storage.enums import AlarmState
from storage.models import Alarm, Beat, Device, Patient, RecordingSession, Vitals
from storage.queries import WindowBlock, alarms_between, beats_between, iter_samples, vitals_between
from storage.types import utcnow

__all__ = [
    "AAMI_SYSTEM",
    "FHIR_JSON",
    "FHIR_VERSION",
    "LOINC_SYSTEM",
    "MAX_EXPORT_SPAN",
    "MAX_WAVEFORM_SPAN",
    "MDC_SYSTEM",
    "OBSERVATION_SYSTEM",
    "RESOURCE_TYPES",
    "SEGMENT_SECONDS",
    "UCUM_SYSTEM",
    "alarm_observation",
    "alarm_report",
    "beat_observation",
    "decode_sampled_data",
    "device_resource",
    "device_resources",
    "export_bundle",
    "export_resources",
    "model_device_id",
    "model_device_resource",
    "patient_resource",
    "searchset_bundle",
    "vitals_observations",
    "waveform_observations",
]

#: The FHIR version of every resource built here (R4B; see the module notes).
FHIR_VERSION = "4.3.0"
#: Media type of FHIR JSON, with the version, for HTTP responses and files.
FHIR_JSON = f"application/fhir+json; fhirVersion={FHIR_VERSION[:3]}"
#: The resource types that the export and the API produce.
RESOURCE_TYPES = ("Patient", "Device", "Observation", "DiagnosticReport")
#: Longest time span whose ECG is exported at once (one hour of two leads at 360 Hz is ~10 MB of JSON).
MAX_WAVEFORM_SPAN = timedelta(hours=1)
#: Longest time span of an export without the ECG (reports, devices).
MAX_EXPORT_SPAN = timedelta(days=7)
#: Longest ECG Observation, in seconds; longer runs of samples are split.
SEGMENT_SECONDS = 60.0

MDC_SYSTEM = "urn:iso:std:iso:11073:10101"
LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"
#: Observation codes of this project (beat class, class probabilities, alarm attributes).
OBSERVATION_SYSTEM = "urn:cardiac-monitor:fhir:CodeSystem:observation"
#: The AAMI EC57 beat classes N, S, V, F, Q.
AAMI_SYSTEM = "urn:cardiac-monitor:fhir:CodeSystem:aami-ec57-beat-class"
_ALARM_KIND_SYSTEM = "urn:cardiac-monitor:fhir:CodeSystem:alarm-kind"
_ALARM_PRIORITY_SYSTEM = "urn:cardiac-monitor:fhir:CodeSystem:alarm-priority"
_ALARM_STATE_SYSTEM = "urn:cardiac-monitor:fhir:CodeSystem:alarm-state"
_MRN_SYSTEM = "urn:cardiac-monitor:fhir:NamingSystem:mrn"
_DEVICE_UID_SYSTEM = "urn:cardiac-monitor:fhir:NamingSystem:device-uid"
_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
_V2_0074_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0074"
_V2_0203_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"

_ECG_CODE = ("131328", "MDC_ECG_ELEC_POTL")
# IEEE 11073-10101 partition 2: MDC_ECG_ELEC_POTL_<lead> = 131328 + the lead's code.
_LEAD_CODES: dict[str, tuple[int, str]] = {
    "I": (1, "I"),
    "II": (2, "II"),
    "MLII": (2, "II"),  # MIT-BIH's modified lead II
    "V1": (3, "V1"),
    "V2": (4, "V2"),
    "V3": (5, "V3"),
    "V4": (6, "V4"),
    "V5": (7, "V5"),
    "V6": (8, "V6"),
    "III": (61, "III"),
    "AVR": (62, "AVR"),
    "AVL": (63, "AVL"),
    "AVF": (64, "AVF"),
}
_AAMI_CLASSES = {
    "N": "Normal or bundle branch block beat",
    "S": "Supraventricular ectopic beat",
    "V": "Ventricular ectopic beat",
    "F": "Fusion beat",
    "Q": "Paced or unclassifiable beat",
}
# (row attribute, id suffix, codes, UCUM unit) of each vital sign.
_VITALS: tuple[tuple[str, str, tuple[tuple[str, str], ...], str], ...] = (
    ("hr_ecg", "hr", (("8867-4", "Heart rate"),), "/min"),
    ("pulse", "pulse", (("8867-4", "Heart rate"), ("8889-8", "Heart rate by Pulse oximetry")), "/min"),
    (
        "spo2",
        "spo2",
        (
            ("2708-6", "Oxygen saturation in Arterial blood"),
            ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
        ),
        "%",
    ),
    ("temperature", "temp", (("8310-5", "Body temperature"),), "Cel"),
)
_MISSING_POINTS = frozenset({"E", "L", "U"})


# Single resources ------------------------------------------------------------------


def patient_resource(patient: Patient) -> FhirPatient:
    """The FHIR Patient of a stored patient: id, MRN, name, birth date."""
    identifier = None
    if patient.mrn:
        mr = CodeableConcept(
            coding=[Coding(system=_V2_0203_SYSTEM, code="MR", display="Medical record number")]
        )
        identifier = [Identifier(use="usual", type=mr, system=_MRN_SYSTEM, value=patient.mrn)]
    return FhirPatient(
        id=str(patient.id),
        identifier=identifier,
        name=[HumanName(text=patient.name)],
        birthDate=patient.date_of_birth,
    )


def device_resource(device: Device) -> FhirDevice:
    """The FHIR Device of a sensor unit; a revoked one is ``inactive``."""
    return FhirDevice(
        id=str(device.id),
        identifier=[Identifier(system=_DEVICE_UID_SYSTEM, value=device.device_uid)],
        status="inactive" if device.revoked_at is not None else "active",
        deviceName=[DeviceDeviceName(name=device.device_uid, type="user-friendly-name")],
        type=CodeableConcept(text="Wearable ECG, pulse oximetry and temperature sensor"),
        version=[DeviceVersion(value=device.firmware)] if device.firmware else None,
        patient=_ref("Patient", device.patient_id) if device.patient_id is not None else None,
    )


def model_device_id(model_version: str) -> str:
    """The FHIR id of the classifier Device of a model version (``model-...``, a valid FHIR id).

    Examples
    --------
    >>> model_device_id("cnn-lstm-1.2")
    'model-cnn-lstm-1.2'
    """
    clean = re.sub(r"[^A-Za-z0-9.-]", "-", model_version)
    if clean == model_version and 0 < len(clean) <= 58:
        return f"model-{clean}"
    digest = hashlib.sha256(model_version.encode("utf-8")).hexdigest()[:12]
    return f"model-{clean[:40]}-{digest}"


def model_device_resource(model_version: str) -> FhirDevice:
    """The beat classifier as a software Device whose version is ``model_version``."""
    return FhirDevice(
        id=model_device_id(model_version),
        status="active",
        deviceName=[DeviceDeviceName(name="Cardiac Monitor CNN-LSTM beat classifier", type="model-name")],
        type=CodeableConcept(text="ECG beat classification software"),
        version=[DeviceVersion(value=model_version)],
    )


def waveform_observations(
    blocks: Iterable[WindowBlock],
    *,
    patient_id: int,
    devices: Mapping[int, int] | None = None,
    segment_seconds: float = SEGMENT_SECONDS,
) -> Iterator[Observation]:
    """ECG Observations, one per contiguous run of samples of a recording session.

    Parameters
    ----------
    blocks : iterable of WindowBlock
        Samples as :func:`storage.iter_samples` yields them.
    patient_id : int
        The subject.
    devices : mapping of int to int, optional
        Device id of each recording session id, for ``Observation.device``.
    segment_seconds : float
        Longest Observation in seconds; longer runs are split.

    Yields
    ------
    Observation
        Coded MDC_ECG_ELEC_POTL, one ``valueSampledData`` component per lead
        (see the module notes); a gap in the samples starts a new one.

    Raises
    ------
    ValueError
        If ``segment_seconds`` is not positive.
    """
    devices = devices or {}
    for segment in _segments(blocks, segment_seconds):
        yield segment.observation(patient_id, devices.get(segment.session_id))


def vitals_observations(vitals: Vitals, *, device_id: int | None = None) -> list[Observation]:
    """One vital-signs Observation per value present in a vitals row (none for missing ones)."""
    observations = []
    for attribute, suffix, codes, unit in _VITALS:
        value = getattr(vitals, attribute)
        if value is None:
            continue
        observations.append(
            Observation(
                id=f"vitals-{vitals.id}-{suffix}",
                status="final",
                category=[_category("vital-signs", "Vital Signs")],
                code=CodeableConcept(
                    coding=[Coding(system=LOINC_SYSTEM, code=code, display=text) for code, text in codes],
                    text=codes[-1][1],
                ),
                subject=_ref("Patient", vitals.patient_id),
                effectiveDateTime=vitals.t,
                valueQuantity=_quantity(value, unit),
                device=_ref("Device", device_id) if device_id is not None else None,
            )
        )
    return observations


def beat_observation(beat: Beat, *, waveform_id: str | None = None) -> Observation:
    """A classified beat: AAMI class as the value, probabilities as components.

    Parameters
    ----------
    beat : Beat
        The stored beat.
    waveform_id : str, optional
        Id of the ECG Observation holding the beat's R peak (``derivedFrom``).
    """
    probabilities = [("N", beat.p_n), ("S", beat.p_s), ("V", beat.p_v), ("F", beat.p_f), ("Q", beat.p_q)]
    components = [
        _probability(f"probability-{label}", f"Probability of class {label}", p) for label, p in probabilities
    ]
    if beat.p_abnormal is not None:
        components.append(
            _probability("probability-abnormal", "Probability of an abnormal beat", beat.p_abnormal)
        )
    if beat.p_early_alarm is not None:
        components.append(
            _probability(
                "probability-early-alarm", "Probability of trouble a few beats ahead", beat.p_early_alarm
            )
        )
    return Observation(
        id=f"beat-{beat.id}",
        status="final",
        category=[_category("procedure", "Procedure")],
        code=CodeableConcept(
            coding=[
                Coding(system=OBSERVATION_SYSTEM, code="ecg-beat-class", display="ECG beat class (AAMI EC57)")
            ]
        ),
        subject=_ref("Patient", beat.patient_id) if beat.patient_id is not None else None,
        effectiveDateTime=beat.t,
        valueCodeableConcept=CodeableConcept(
            coding=[Coding(system=AAMI_SYSTEM, code=beat.label, display=_AAMI_CLASSES.get(beat.label))]
        ),
        derivedFrom=[_ref("Observation", waveform_id)] if waveform_id is not None else None,
        device=_ref("Device", model_device_id(beat.model_version)),
        method=CodeableConcept(text=f"CNN-LSTM beat classifier, model version {beat.model_version}"),
        component=components,
    )


def alarm_observation(alarm: Alarm, *, waveform_ids: Sequence[str] = ()) -> Observation:
    """An alarm episode: kind, priority and state, ``derivedFrom`` the ECG it overlaps."""
    return Observation(
        id=f"alarm-{alarm.id}",
        status=_status(alarm),
        category=[_category("procedure", "Procedure")],
        code=CodeableConcept(
            coding=[Coding(system=_ALARM_KIND_SYSTEM, code=alarm.kind)], text=f"{alarm.kind} alarm"
        ),
        subject=_ref("Patient", alarm.patient_id),
        effectivePeriod=Period(start=alarm.started_at, end=alarm.ended_at),
        valueString=alarm.detail or None,
        derivedFrom=[_ref("Observation", i) for i in waveform_ids] or None,
        component=[
            ObservationComponent(
                code=_local_code("alarm-priority", "Alarm priority (IEC 60601-1-8)"),
                valueCodeableConcept=CodeableConcept(
                    coding=[Coding(system=_ALARM_PRIORITY_SYSTEM, code=alarm.priority.value)]
                ),
            ),
            ObservationComponent(
                code=_local_code("alarm-state", "Alarm state"),
                valueCodeableConcept=CodeableConcept(
                    coding=[Coding(system=_ALARM_STATE_SYSTEM, code=alarm.state.value)]
                ),
            ),
        ],
    )


def alarm_report(alarm: Alarm, results: Sequence[str]) -> DiagnosticReport:
    """The DiagnosticReport of an alarm event, grouping the Observations ``results`` (ids)."""
    detail = f": {alarm.detail}" if alarm.detail else ""
    return DiagnosticReport(
        id=f"alarm-{alarm.id}",
        status=_status(alarm),
        category=[
            CodeableConcept(coding=[Coding(system=_V2_0074_SYSTEM, code="EC", display="Electrocardiac")])
        ],
        code=CodeableConcept(coding=[Coding(system=LOINC_SYSTEM, code="11524-6", display="EKG study")]),
        subject=_ref("Patient", alarm.patient_id),
        effectivePeriod=Period(start=alarm.started_at, end=alarm.ended_at),
        result=[_ref("Observation", i) for i in results] or None,
        conclusion=f"{alarm.kind} alarm ({alarm.priority.value} priority){detail}",
    )


def decode_sampled_data(data: SampledData) -> npt.NDArray[np.float64]:
    """Values of a SampledData, ``origin + factor * data``, as ``(n_samples, dimensions)``.

    Points marked ``E``, ``L`` or ``U`` (error, below or above the detection
    limit) decode as NaN.

    Raises
    ------
    ValueError
        If the number of points is not a multiple of ``dimensions``.
    """
    tokens = (data.data or "").split()
    points = np.array([np.nan if t in _MISSING_POINTS else float(t) for t in tokens], dtype=np.float64)
    dims = int(data.dimensions or 1)
    if points.size % dims:
        raise ValueError(f"SampledData holds {points.size} points, not a multiple of `dimensions` = {dims}")
    factor = float(data.factor) if data.factor is not None else 1.0
    origin = float(data.origin.value) if data.origin.value is not None else 0.0
    return (origin + factor * points).reshape(-1, dims)


# Exports --------------------------------------------------------------------------


def device_resources(
    session: Session, patient_id: int, start: datetime | None = None, end: datetime | None = None
) -> list[FhirDevice]:
    """The Devices of a patient: sensors, then the beat classifiers that analysed them.

    Sensors are those assigned to the patient and those that recorded them
    (in ``[start, end)`` when a window is given, else ever); classifiers are
    the model versions of the patient's beats (in the window, else all).

    Raises
    ------
    ValueError
        If only one bound is given, or a bound is naive or they are reversed.
    """
    if (start is None) != (end is None):
        raise ValueError("give both `start` and `end`, or neither")
    recorded = select(RecordingSession.device_id).where(RecordingSession.patient_id == patient_id)
    versions = select(Beat.model_version).where(Beat.patient_id == patient_id)
    if start is not None and end is not None:
        _check_span(start, end, limit=None)
        recorded = recorded.where(
            RecordingSession.started_at < end,
            or_(RecordingSession.ended_at.is_(None), RecordingSession.ended_at >= start),
        )
        versions = versions.where(Beat.t >= start, Beat.t < end)
    assigned = select(Device.id).where(Device.patient_id == patient_id)
    ids = set(session.scalars(recorded)) | set(session.scalars(assigned))
    sensors = session.scalars(select(Device).where(Device.id.in_(ids)).order_by(Device.id)) if ids else None
    models = session.scalars(versions.distinct().order_by(Beat.model_version))
    return [*(device_resource(d) for d in sensors or []), *(model_device_resource(v) for v in models)]


def export_resources(
    session: Session,
    patient_id: int,
    start: datetime,
    end: datetime,
    *,
    resource_types: Collection[str] = RESOURCE_TYPES,
) -> list[Resource]:
    """Every resource of a patient in ``[start, end)``, of the requested types.

    Samples, beats, vitals and alarms are read by window with the streaming
    queries of :mod:`storage.queries`, never a whole recording.

    Parameters
    ----------
    session : Session
        Open session.
    patient_id : int
        The patient.
    start, end : datetime
        Timezone-aware bounds.
    resource_types : collection of str
        Any of :data:`RESOURCE_TYPES`.

    Returns
    -------
    list of Resource
        The Patient, Devices, Observations (ECG, vital signs, beats, alarm
        episodes), then DiagnosticReports, in that order.

    Raises
    ------
    ValueError
        For naive or reversed bounds, a span over :data:`MAX_WAVEFORM_SPAN`
        (with Observations) or :data:`MAX_EXPORT_SPAN`, an unknown resource
        type or an unknown patient.
    """
    types = frozenset(resource_types)
    unknown = sorted(types - set(RESOURCE_TYPES))
    if unknown:
        raise ValueError(f"`resource_types` may hold {list(RESOURCE_TYPES)}, got unknown {unknown}")
    _check_span(start, end, limit=MAX_WAVEFORM_SPAN if "Observation" in types else MAX_EXPORT_SPAN)
    patient = session.get(Patient, patient_id)
    if patient is None:
        raise ValueError(f"no patient with id {patient_id}")
    recordings = session.execute(
        select(RecordingSession.id, RecordingSession.device_id).where(
            RecordingSession.patient_id == patient_id
        )
    ).all()
    devices = {rid: did for rid, did in recordings}

    export = _Export()
    with_observations = "Observation" in types
    if with_observations:
        for segment in _segments(iter_samples(session, patient_id, start, end), SEGMENT_SECONDS):
            export.add_waveform(segment, segment.observation(patient_id, devices.get(segment.session_id)))
        for vitals in vitals_between(session, patient_id, start, end):
            device_id = devices.get(vitals.session_id) if vitals.session_id is not None else None
            export.findings.extend(vitals_observations(vitals, device_id=device_id))
        for beat in beats_between(session, patient_id, start, end):
            waveform_id = export.waveform_at(beat.session_id, beat.r_peak_seq)
            export.findings.append(beat_observation(beat, waveform_id=waveform_id))
    if with_observations or "DiagnosticReport" in types:
        for alarm in alarms_between(session, patient_id, start, end):
            low, high = max(alarm.started_at, start), min(alarm.ended_at or end, end)
            overlapping = export.waveforms_between(low, high)
            episode = alarm_observation(alarm, waveform_ids=overlapping)
            if with_observations:
                export.episodes.append(episode)
            if "DiagnosticReport" in types:
                findings = _finding_ids(session, patient_id, low, high) if high > low else []
                export.reports.append(alarm_report(alarm, [episode.id or "", *overlapping, *findings]))

    resources: list[Resource] = []
    if "Patient" in types:
        resources.append(patient_resource(patient))
    if "Device" in types:
        resources.extend(device_resources(session, patient_id, start, end))
    resources.extend(export.observations())
    resources.extend(export.reports)
    return resources


def export_bundle(
    session: Session,
    patient_id: int,
    start: datetime,
    end: datetime,
    *,
    base_url: str | None = None,
) -> Bundle:
    """A ``collection`` Bundle of everything :func:`export_resources` gives.

    Parameters
    ----------
    session : Session
        Open session.
    patient_id : int
        The patient.
    start, end : datetime
        Timezone-aware bounds; at most :data:`MAX_WAVEFORM_SPAN` apart.
    base_url : str, optional
        The FHIR base (``https://host/fhir``) for the entries' ``fullUrl``;
        without it entries have none and references stay relative.

    Examples
    --------
    >>> with db.session() as session:  # doctest: +SKIP
    ...     text = export_bundle(session, 1, start, end).model_dump_json()
    """
    resources = export_resources(session, patient_id, start, end)
    return Bundle(
        type="collection",
        timestamp=utcnow(),
        entry=[BundleEntry(fullUrl=_full_url(base_url, r), resource=r) for r in resources] or None,
    )


def searchset_bundle(
    resources: Sequence[Resource],
    *,
    base_url: str,
    self_url: str,
    total: int | None = None,
    links: Mapping[str, str] | None = None,
) -> Bundle:
    """The ``searchset`` Bundle that answers a search: every resource a match.

    ``total`` is the number of matches of the whole search (default: the
    resources given, for an answer in one page); ``links`` adds paging
    links by relation (``next``, ``previous``...) after ``self``.
    """
    extra = [BundleLink(relation=rel, url=url) for rel, url in (links or {}).items()]
    return Bundle(
        type="searchset",
        timestamp=utcnow(),
        total=len(resources) if total is None else total,
        link=[BundleLink(relation="self", url=self_url), *extra],
        entry=[
            BundleEntry(fullUrl=_full_url(base_url, r), resource=r, search=BundleEntrySearch(mode="match"))
            for r in resources
        ]
        or None,
    )


# Internals -------------------------------------------------------------------


@dataclass
class _Segment:
    """Samples of one recording session being gathered into one ECG Observation."""

    session_id: int
    t0: datetime
    first_seq: int
    fs: float
    lead_names: tuple[str, ...]
    gain: float
    baseline: int
    parts: list[npt.NDArray[np.int16]] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return sum(int(p.shape[0]) for p in self.parts)

    @property
    def end_seq(self) -> int:
        return self.first_seq + self.n_samples

    @property
    def t_end(self) -> datetime:
        return self.t0 + timedelta(seconds=self.n_samples / self.fs)

    def observation(self, patient_id: int, device_id: int | None) -> Observation:
        samples = np.concatenate(self.parts, axis=0)  # (n_samples, n_leads)
        origin = _quantity(0.0 - self.baseline / self.gain, "mV")
        components = [
            ObservationComponent(
                code=_lead_code(name),
                valueSampledData=SampledData(
                    origin=origin,
                    period=_decimal(1000.0 / self.fs),
                    factor=_decimal(1.0 / self.gain),
                    dimensions=1,
                    data=" ".join(str(v) for v in samples[:, k].tolist()),
                ),
            )
            for k, name in enumerate(self.lead_names)
        ]
        return Observation(
            id=f"ecg-{self.session_id}-{self.first_seq}",
            status="final",
            category=[_category("procedure", "Procedure")],
            code=CodeableConcept(
                coding=[Coding(system=MDC_SYSTEM, code=_ECG_CODE[0], display=_ECG_CODE[1])], text="ECG"
            ),
            subject=_ref("Patient", patient_id),
            effectivePeriod=Period(start=self.t0, end=self.t_end),
            device=_ref("Device", device_id) if device_id is not None else None,
            component=components,
        )


def _segments(blocks: Iterable[WindowBlock], segment_seconds: float) -> Iterator[_Segment]:
    """Group window blocks into contiguous runs of samples of at most ``segment_seconds``."""
    if not segment_seconds > 0:
        raise ValueError(f"`segment_seconds` must be positive, got {segment_seconds}")
    pending: dict[int, _Segment] = {}
    for window in blocks:
        block = window.block
        segment = pending.get(window.session_id)
        if segment is not None and segment.end_seq != block.first_seq:
            yield pending.pop(window.session_id)
        max_samples = max(1, round(segment_seconds * block.fs))
        offset = 0
        while offset < block.n_samples:
            segment = pending.get(window.session_id)
            if segment is None:
                segment = _Segment(
                    session_id=window.session_id,
                    t0=window.t0 + timedelta(seconds=offset / block.fs),
                    first_seq=block.first_seq + offset,
                    fs=block.fs,
                    lead_names=block.lead_names,
                    gain=block.gain,
                    baseline=block.baseline,
                )
                pending[window.session_id] = segment
            take = min(max_samples - segment.n_samples, block.n_samples - offset)
            segment.parts.append(block.samples[offset : offset + take])
            offset += take
            if segment.n_samples >= max_samples:
                yield pending.pop(window.session_id)
    yield from sorted(pending.values(), key=lambda s: (s.t0, s.session_id))


@dataclass
class _Export:
    """What :func:`export_resources` gathers, with indexes to link findings to the ECG."""

    waveforms: list[Observation] = field(default_factory=list)
    findings: list[Observation] = field(default_factory=list)
    episodes: list[Observation] = field(default_factory=list)
    reports: list[DiagnosticReport] = field(default_factory=list)
    # Per recording session: sorted first sequence numbers, and (end_seq, id) alongside.
    _starts: dict[int, list[int]] = field(default_factory=dict)
    _segments: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    _spans: list[tuple[datetime, datetime, str]] = field(default_factory=list)

    def add_waveform(self, segment: _Segment, observation: Observation) -> None:
        obs_id = observation.id or ""
        self.waveforms.append(observation)
        starts = self._starts.setdefault(segment.session_id, [])
        k = bisect.bisect_right(starts, segment.first_seq)
        starts.insert(k, segment.first_seq)
        self._segments.setdefault(segment.session_id, []).insert(k, (segment.end_seq, obs_id))
        self._spans.append((segment.t0, segment.t_end, obs_id))

    def waveform_at(self, session_id: int, seq: int) -> str | None:
        """Id of the ECG Observation holding sample ``seq`` of a recording session."""
        starts = self._starts.get(session_id, [])
        k = bisect.bisect_right(starts, seq) - 1
        if k < 0:
            return None
        end_seq, obs_id = self._segments[session_id][k]
        return obs_id if seq < end_seq else None

    def waveforms_between(self, start: datetime, end: datetime) -> list[str]:
        """Ids of the ECG Observations overlapping ``[start, end)``."""
        return [obs_id for s, e, obs_id in self._spans if s < end and e > start]

    def observations(self) -> list[Observation]:
        waveforms = sorted(self.waveforms, key=_start_of)
        return [*waveforms, *self.findings, *self.episodes]


def _finding_ids(session: Session, patient_id: int, start: datetime, end: datetime) -> list[str]:
    """Ids of the abnormal-beat and vital-sign Observations in ``[start, end)``, read as keys only."""
    beats = session.scalars(
        select(Beat.id)
        .where(Beat.patient_id == patient_id, Beat.t >= start, Beat.t < end, Beat.label != "N")
        .order_by(Beat.t, Beat.id)
    )
    ids = [f"beat-{beat_id}" for beat_id in beats]
    columns = [getattr(Vitals, attribute) for attribute, *_ in _VITALS]
    rows = session.execute(
        select(Vitals.id, *columns)
        .where(Vitals.patient_id == patient_id, Vitals.t >= start, Vitals.t < end)
        .order_by(Vitals.t, Vitals.id)
    )
    for vitals_id, *values in rows:
        ids.extend(
            f"vitals-{vitals_id}-{suffix}"
            for (_, suffix, _, _), value in zip(_VITALS, values, strict=True)
            if value is not None
        )
    return ids


def _check_span(start: datetime, end: datetime, *, limit: timedelta | None) -> None:
    for name, value in (("start", start), ("end", end)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"`{name}` must be timezone-aware, got naive {value.isoformat()}")
    if not end > start:
        raise ValueError(f"`end` must be after `start`, got {start.isoformat()} .. {end.isoformat()}")
    if limit is not None and end - start > limit:
        what = "an export with the ECG" if limit == MAX_WAVEFORM_SPAN else "an export"
        raise ValueError(
            f"{what} may span at most {limit}, got {end - start} "
            f"({start.isoformat()} .. {end.isoformat()}); split the range"
        )


def _ref(resource_type: str, resource_id: int | str) -> Reference:
    return Reference(reference=f"{resource_type}/{resource_id}")


def _full_url(base_url: str | None, resource: Resource) -> str | None:
    if base_url is None:
        return None
    return f"{base_url.rstrip('/')}/{resource.get_resource_type()}/{resource.id}"


def _decimal(value: float) -> Decimal:
    """A float as the shortest decimal that reads back as the same float."""
    return Decimal(repr(float(value) + 0.0))  # + 0.0 turns -0.0 into 0.0


def _quantity(value: float, unit: str) -> Quantity:
    return Quantity(value=_decimal(value), unit=unit, system=UCUM_SYSTEM, code=unit)


def _category(code: str, display: str) -> CodeableConcept:
    return CodeableConcept(coding=[Coding(system=_CATEGORY_SYSTEM, code=code, display=display)])


def _local_code(code: str, display: str) -> CodeableConcept:
    return CodeableConcept(coding=[Coding(system=OBSERVATION_SYSTEM, code=code, display=display)])


def _probability(code: str, display: str, value: float) -> ObservationComponent:
    return ObservationComponent(code=_local_code(code, display), valueQuantity=_quantity(value, "1"))


def _lead_code(name: str) -> CodeableConcept:
    """MDC code of a lead (MDC_ECG_ELEC_POTL_<lead>); the generic ECG code for unknown leads.

    ``text`` keeps the lead name as stored, so an export reads back lead by lead.
    """
    known = _LEAD_CODES.get(name.strip().upper())
    if known is None:
        coding = Coding(system=MDC_SYSTEM, code=_ECG_CODE[0], display=_ECG_CODE[1])
    else:
        offset, label = known
        coding = Coding(system=MDC_SYSTEM, code=str(131328 + offset), display=f"MDC_ECG_ELEC_POTL_{label}")
    return CodeableConcept(coding=[coding], text=name)


def _status(alarm: Alarm) -> str:
    return "final" if alarm.state == AlarmState.RESOLVED else "preliminary"


def _start_of(observation: Observation) -> datetime:
    period = observation.effectivePeriod
    if period is None or period.start is None:
        raise ValueError(f"Observation {observation.id} has no effectivePeriod.start")
    return _as_datetime(period.start)


def _as_datetime(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    return value
