"""Role rules: who sees which patient and who may acknowledge, administer, export."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.access import (
    AccessDeniedError,
    can_acknowledge,
    can_administer,
    can_export,
    check_patient,
    visible_patient_ids,
    visible_patients,
)
from storage import Database


class TestVisiblePatientIds:
    def test_basic(self) -> None:
        assert visible_patient_ids("admin", [1, 2, 3], []) == {1, 2, 3}
        assert visible_patient_ids("clinician", [1, 2, 3], []) == {1, 2, 3}
        assert visible_patient_ids("caregiver", [1, 2, 3], [2]) == {2}

    def test_edge_cases(self) -> None:
        assert visible_patient_ids("caregiver", [1, 2], []) == frozenset()
        assert visible_patient_ids("caregiver", [1, 2], [7]) == frozenset()  # a stale assignment
        assert visible_patient_ids("somebody", [1, 2], [1]) == frozenset()


class TestPermissions:
    @pytest.mark.parametrize(
        ("role", "ack", "admin", "export"),
        [
            ("admin", False, True, True),
            ("clinician", True, False, True),
            ("caregiver", False, False, False),
            ("unknown", False, False, False),
        ],
    )
    def test_basic(self, role: str, ack: bool, admin: bool, export: bool) -> None:
        assert can_acknowledge(role) is ack
        assert can_administer(role) is admin
        assert can_export(role) is export


class TestCheckPatient:
    def test_basic(self, db: Database, seeded: Any) -> None:
        with db.session() as session:
            assert [p.name for p in visible_patients(session, seeded.caregiver, "caregiver")] == [
                "Ada Lovelace"
            ]
            assert len(visible_patients(session, seeded.clinician, "clinician")) == 2
            assert check_patient(session, seeded.caregiver, "caregiver", seeded.ada).id == seeded.ada

    def test_exceptions(self, db: Database, seeded: Any) -> None:
        with db.session() as session, pytest.raises(AccessDeniedError, match="not available"):
            check_patient(session, seeded.caregiver, "caregiver", seeded.bob)
        with db.session() as session, pytest.raises(AccessDeniedError, match="not available"):
            check_patient(session, seeded.clinician, "clinician", 999)
