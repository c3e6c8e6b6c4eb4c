"""Enumerations stored in the database and shared with the alarm rules.

They are plain :class:`enum.StrEnum` classes, so the values read and compare as
the strings that the database holds (``Role.ADMIN == "admin"``).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["AlarmPriority", "AlarmState", "Role"]


class Role(StrEnum):
    """What a user may do: administer, monitor patients, or follow assigned ones."""

    ADMIN = "admin"
    CLINICIAN = "clinician"
    CAREGIVER = "caregiver"


class AlarmPriority(StrEnum):
    """Alarm priority after IEC 60601-1-8: high needs immediate response."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """2 for high, 1 for medium, 0 for low, for comparisons."""
        return {"high": 2, "medium": 1, "low": 0}[self.value]


class AlarmState(StrEnum):
    """Lifecycle of an alarm.

    ``active``: sounding, nobody has acknowledged it (a latched high alarm
    stays active after its condition ended). ``acknowledged``: a user has
    acknowledged it while the condition persists. ``resolved``: closed.
    """

    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
