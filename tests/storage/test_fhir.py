"""FHIR R4B export: round trips through fhir.resources, codes, ECG segments, reports, API tokens."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.sampleddata import SampledData
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import (
    AAMI_SYSTEM,
    LOINC_SYSTEM,
    MDC_SYSTEM,
    Alarm,
    AlarmPriority,
    AlarmState,
    ApiToken,
    AuditEntry,
    Beat,
    RecordingSession,
    add_vitals,
    decode_sampled_data,
    export_bundle,
    export_resources,
    insert_chunk,
    issue_api_token,
    iter_samples,
    list_api_tokens,
    model_device_id,
    revoke_api_token,
    verify_api_token,
    waveform_observations,
)

FS = 250.0
GAIN = 200.0


def _at(t0: datetime, seconds: float) -> datetime:
    return t0 + timedelta(seconds=seconds)


def _seed(session: Session, recording: RecordingSession, t0: datetime) -> int:
    """Two chunks of ECG with a 2-s gap between them, beats, vitals and an alarm; returns the alarm id."""
    rng = np.random.default_rng(7)
    for first_seq, n in ((0, int(8 * FS)), (int(10 * FS), int(6 * FS))):
        samples = rng.integers(-2000, 2000, size=(n, 2)).astype(np.int16)
        insert_chunk(session, recording, samples, first_seq)
    patient_id = recording.patient_id
    assert patient_id is not None
    for k, (second, label) in enumerate([(1.0, "N"), (2.0, "V"), (11.0, "N"), (9.0, "S")]):
        p = [0.02] * 5
        p["NSVFQ".index(label)] = 0.92
        session.add(
            Beat(
                session_id=recording.id,
                patient_id=patient_id,
                t=_at(t0, second),
                r_peak_seq=int(second * FS),
                label=label,
                p_n=p[0],
                p_s=p[1],
                p_v=p[2],
                p_f=p[3],
                p_q=p[4],
                p_abnormal=0.0 if label == "N" else 0.9,
                p_early_alarm=None if k == 0 else 0.25,
                model_version="cnn-lstm-2026.1",
            )
        )
    add_vitals(session, patient_id, _at(t0, 3.0), recording_id=recording.id, hr_ecg=72.0, spo2=96.5)
    add_vitals(session, patient_id, _at(t0, 12.0), pulse=74.0, temperature=36.9)
    alarm = Alarm(
        patient_id=patient_id,
        kind="pvc",
        priority=AlarmPriority.MEDIUM,
        state=AlarmState.RESOLVED,
        started_at=_at(t0, 1.5),
        ended_at=_at(t0, 4.0),
        detail="isolated PVC",
    )
    session.add(alarm)
    session.flush()
    return alarm.id


def _by_id(bundle: Bundle) -> dict[str, object]:
    return {f"{e.resource.get_resource_type()}/{e.resource.id}": e.resource for e in bundle.entry or []}


class TestExportBundle:
    def test_round_trip(self, session: Session, recording: RecordingSession, t0: datetime) -> None:
        _seed(session, recording, t0)
        patient_id = recording.patient_id or 0
        bundle = export_bundle(session, patient_id, t0, _at(t0, 20), base_url="https://ehr.test/fhir")
        text = bundle.model_dump_json()
        parsed = Bundle.model_validate_json(text)
        assert parsed.type == "collection"
        assert len(parsed.entry or []) == len(bundle.entry or []) > 10
        for before, after in zip(bundle.entry or [], parsed.entry or [], strict=True):
            assert type(after.resource) is type(before.resource)
            assert after.resource.model_dump(mode="json") == before.resource.model_dump(mode="json")
            assert (
                after.fullUrl
                == f"https://ehr.test/fhir/{before.resource.get_resource_type()}/{before.resource.id}"
            )
        kinds = {key.split("/")[0] for key in _by_id(parsed)}
        assert kinds == {"Patient", "Device", "Observation", "DiagnosticReport"}

    def test_waveform_decodes_to_stored_samples(
        self, session: Session, recording: RecordingSession, t0: datetime
    ) -> None:
        _seed(session, recording, t0)
        patient_id = recording.patient_id or 0
        parsed = Bundle.model_validate_json(
            export_bundle(session, patient_id, t0, _at(t0, 20)).model_dump_json()
        )
        ecgs = [
            r
            for r in _by_id(parsed).values()
            if isinstance(r, Observation) and (r.id or "").startswith("ecg-")
        ]
        assert len(ecgs) == 2  # the gap between the chunks splits the ECG
        stored = list(iter_samples(session, patient_id, t0, _at(t0, 20)))
        for obs, window in zip(sorted(ecgs, key=lambda o: o.id or ""), stored, strict=True):
            assert obs.code.coding[0].system == MDC_SYSTEM
            assert obs.code.coding[0].code == "131328"
            assert obs.effectivePeriod.start == window.t0
            expected = window.block.physical()  # (n, 2) mV
            for k, component in enumerate(obs.component or []):
                assert component.code.text == recording.lead_names[k]
                data = component.valueSampledData
                assert float(data.period) == pytest.approx(1000.0 / FS)
                decoded = decode_sampled_data(data)[:, 0]
                np.testing.assert_allclose(decoded, expected[:, k], atol=0.5 / GAIN)
        # lead MLII is MDC_ECG_ELEC_POTL_II, V5 is MDC_ECG_ELEC_POTL_V5
        codes = [c.code.coding[0].code for c in ecgs[0].component or []]
        assert codes == ["131330", "131335"]

    def test_findings_codes_and_links(
        self, session: Session, recording: RecordingSession, t0: datetime
    ) -> None:
        alarm_id = _seed(session, recording, t0)
        patient_id = recording.patient_id or 0
        resources = _by_id(export_bundle(session, patient_id, t0, _at(t0, 20)))
        beats = {k: r for k, r in resources.items() if k.startswith("Observation/beat-")}
        assert len(beats) == 4
        for beat in beats.values():
            assert isinstance(beat, Observation)
            label = beat.valueCodeableConcept.coding[0]
            assert label.system == AAMI_SYSTEM
            probabilities = {
                c.code.coding[0].code: float(c.valueQuantity.value) for c in beat.component or []
            }
            assert probabilities[f"probability-{label.code}"] == pytest.approx(0.92)
            assert beat.device.reference == f"Device/{model_device_id('cnn-lstm-2026.1')}"
            assert "cnn-lstm-2026.1" in (beat.method.text or "")
            # The beat at 9 s falls in the gap: no waveform to derive from.
            if beat.effectiveDateTime == _at(t0, 9.0):
                assert beat.derivedFrom is None
            else:
                (source,) = beat.derivedFrom or []
                ecg = resources[source.reference or ""]
                assert isinstance(ecg, Observation)
                assert ecg.effectivePeriod.start <= beat.effectiveDateTime < ecg.effectivePeriod.end
        model = resources[f"Device/{model_device_id('cnn-lstm-2026.1')}"]
        assert model.version[0].value == "cnn-lstm-2026.1"
        vitals = [r for k, r in resources.items() if k.startswith("Observation/vitals-")]
        units = {(r.code.coding[0].code, r.valueQuantity.code, float(r.valueQuantity.value)) for r in vitals}
        assert units == {
            ("8867-4", "/min", 72.0),
            ("2708-6", "%", 96.5),
            ("8867-4", "/min", 74.0),
            ("8310-5", "Cel", 36.9),
        }
        spo2 = next(r for r in vitals if r.code.coding[0].code == "2708-6")
        assert [c.code for c in spo2.code.coding] == ["2708-6", "59408-5"]
        assert all(c.system == LOINC_SYSTEM for r in vitals for c in r.code.coding)
        report = resources[f"DiagnosticReport/alarm-{alarm_id}"]
        grouped = {ref.reference for ref in report.result or []}
        assert f"Observation/alarm-{alarm_id}" in grouped
        # the alarm spans 1.5 s .. 4 s: the V beat at 2 s, the vitals at 3 s, the first ECG segment
        beat_refs = {r for r in grouped if r.startswith("Observation/beat-")}
        assert [resources[r].effectiveDateTime for r in beat_refs] == [_at(t0, 2.0)]
        assert any(r.startswith("Observation/vitals-") for r in grouped)
        assert any(r.startswith("Observation/ecg-") for r in grouped)
        assert grouped <= set(resources)  # every grouped result is in the bundle
        assert report.status == "final"
        patient = resources[f"Patient/{patient_id}"]
        assert patient.identifier[0].value == "MRN-1"

    def test_resource_types(self, session: Session, recording: RecordingSession, t0: datetime) -> None:
        _seed(session, recording, t0)
        patient_id = recording.patient_id or 0
        reports = export_resources(session, patient_id, t0, _at(t0, 20), resource_types=["DiagnosticReport"])
        assert [r.get_resource_type() for r in reports] == ["DiagnosticReport"]
        # without the ECG, a day is allowed
        devices = export_resources(session, patient_id, t0, _at(t0, 86400), resource_types=["Device"])
        assert {r.id for r in devices} == {str(recording.device_id), model_device_id("cnn-lstm-2026.1")}
        later = export_resources(session, patient_id, _at(t0, 30), _at(t0, 60))
        assert [r.get_resource_type() for r in later] == ["Patient", "Device"]  # the assigned sensor

    def test_exceptions(self, session: Session, recording: RecordingSession, t0: datetime) -> None:
        patient_id = recording.patient_id or 0
        with pytest.raises(ValueError, match="timezone-aware"):
            export_bundle(session, patient_id, t0.replace(tzinfo=None), _at(t0, 1))
        with pytest.raises(ValueError, match="`end` must be after `start`"):
            export_bundle(session, patient_id, t0, t0)
        with pytest.raises(ValueError, match="with the ECG may span at most 1:00:00"):
            export_bundle(session, patient_id, t0, _at(t0, 3601))
        with pytest.raises(ValueError, match="no patient with id 999"):
            export_bundle(session, 999, t0, _at(t0, 10))
        with pytest.raises(ValueError, match="unknown \\['Encounter'\\]"):
            export_resources(session, patient_id, t0, _at(t0, 10), resource_types=["Encounter"])


class TestWaveformObservations:
    def test_long_runs_split(self, session: Session, recording: RecordingSession, t0: datetime) -> None:
        samples = np.arange(20 * 2 * int(FS), dtype=np.int16).reshape(-1, 2)  # 20 s
        insert_chunk(session, recording, samples, 0)
        blocks = iter_samples(session, recording.patient_id or 0, t0, _at(t0, 20))
        observations = list(waveform_observations(blocks, patient_id=1, segment_seconds=8.0))
        lengths = [len(o.component[0].valueSampledData.data.split()) for o in observations]
        assert lengths == [2000, 2000, 1000]
        assert [o.effectivePeriod.start for o in observations] == [t0, _at(t0, 8), _at(t0, 16)]
        first = decode_sampled_data(observations[1].component[1].valueSampledData)[:, 0]
        np.testing.assert_allclose(first * GAIN, samples[2000:4000, 1])

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="`segment_seconds` must be positive"):
            list(waveform_observations([], patient_id=1, segment_seconds=0))


class TestDecodeSampledData:
    def test_basic(self) -> None:
        origin = Quantity(value=Decimal("-0.5"), unit="mV")
        data = SampledData(
            origin=origin, period=Decimal(4), factor=Decimal("0.25"), dimensions=2, data="0 4 E 8"
        )
        decoded = decode_sampled_data(data)
        assert decoded.shape == (2, 2)
        np.testing.assert_array_equal(decoded[0], [-0.5, 0.5])
        assert np.isnan(decoded[1, 0])
        assert decoded[1, 1] == 1.5

    def test_exceptions(self) -> None:
        data = SampledData(origin=Quantity(value=Decimal(0)), period=Decimal(4), dimensions=2, data="1 2 3")
        with pytest.raises(ValueError, match="not a multiple of `dimensions` = 2"):
            decode_sampled_data(data)


class TestApiTokens:
    def test_basic(self, session: Session) -> None:
        row, secret = issue_api_token(session, " ehr-prod ", actor="user:1", ward=" ICU ")
        assert row.name == "ehr-prod"
        assert row.ward == "ICU"
        assert secret not in row.token_hash
        assert len(row.token_hash) == 64
        found = verify_api_token(session, secret)
        assert found is not None
        assert found.id == row.id
        assert found.last_used_at is not None
        assert verify_api_token(session, secret + "x") is None
        revoke_api_token(session, "ehr-prod", actor="cli")
        assert verify_api_token(session, secret) is None
        actions = list(session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
        assert actions == ["api_token.issue", "api_token.revoke"]
        assert secret not in str(list(session.scalars(select(AuditEntry.details))))

    def test_edge_cases(self, session: Session) -> None:
        _, first = issue_api_token(session, "a", actor="cli")
        _, second = issue_api_token(session, "b", actor="cli", ward="   ")
        assert first != second
        assert [t.name for t in list_api_tokens(session)] == ["a", "b"]
        assert session.scalar(select(ApiToken.ward).where(ApiToken.name == "b")) is None
        revoke_api_token(session, "a", actor="cli")
        revoke_api_token(session, "a", actor="cli")  # again: no second audit line
        assert (
            len(list(session.scalars(select(AuditEntry).where(AuditEntry.action == "api_token.revoke")))) == 1
        )

    def test_exceptions(self, session: Session) -> None:
        issue_api_token(session, "ehr", actor="cli")
        with pytest.raises(ValueError, match="named 'ehr' exists already"):
            issue_api_token(session, "ehr", actor="cli")
        with pytest.raises(ValueError, match="`name` must be 1-128 printable characters"):
            issue_api_token(session, "  ", actor="cli")
        with pytest.raises(LookupError, match="no API token named 'nope'"):
            revoke_api_token(session, "nope", actor="cli")
