"""Tables of the monitor, as typed SQLAlchemy 2.x declarative models.

Every timestamp is a timezone-aware UTC :class:`~datetime.datetime`
(:class:`~storage.types.UTCDateTime`). Sequence numbers are sample indices in
a device's stream (see ``docs/protocol.md``), so ``first_seq / fs`` after the
recording session's ``started_at`` is the time of a chunk's first sample.

The schema itself is created by the Alembic migrations in
``storage/migrations``; a test keeps the migrations and these models equal.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column, relationship

from storage.enums import AlarmPriority, AlarmState, Role
from storage.types import UTCDateTime, utcnow

__all__ = [
    "Alarm",
    "ApiToken",
    "AppendOnlyError",
    "AuditEntry",
    "Base",
    "Beat",
    "CaregiverAssignment",
    "Device",
    "Patient",
    "RecordingSession",
    "SignalChunk",
    "User",
    "Vitals",
]

# Explicit constraint names make migrations identical on SQLite and PostgreSQL
# and let later migrations drop constraints by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit keys on PostgreSQL for the high-volume tables; SQLite needs INTEGER
# for its rowid alias to autoincrement.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def _enum(cls: type[Role] | type[AlarmPriority] | type[AlarmState], name: str) -> Enum:
    """A portable enum column: VARCHAR plus a CHECK constraint, no native type."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    """Declarative base holding the shared metadata."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    """A person who logs in to the dashboard."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    #: The ward a clinician works on; ``None``: every ward (a site without wards).
    ward: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    assignments: Mapped[list[CaregiverAssignment]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )


class Patient(Base):
    """A monitored patient; ``alarm_limits`` overrides the default alarm limits."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    mrn: Mapped[str | None] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    date_of_birth: Mapped[date | None] = mapped_column(Date)
    alarm_limits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: The ward the patient lies on; ``None``: not on a ward.
    ward: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    devices: Mapped[list[Device]] = relationship(back_populates="patient")


class CaregiverAssignment(Base):
    """A caregiver (or clinician) who may follow a patient."""

    __tablename__ = "caregiver_assignments"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(back_populates="assignments")
    patient: Mapped[Patient] = relationship()


class Device(Base):
    """A sensor unit. Only the SHA-256 of its token is stored."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_uid: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id", ondelete="SET NULL"), index=True)
    firmware: Mapped[str | None] = mapped_column(String(64))
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    battery: Mapped[float | None] = mapped_column(Float)
    rssi: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    patient: Mapped[Patient | None] = relationship(back_populates="devices")


class RecordingSession(Base):
    """One stream of a device: the sequence space that its ``stream_id`` names.

    The hello message's description of the signal (rate, leads, gain) is
    fixed for a session; a device that changes it starts a new stream.
    """

    __tablename__ = "recording_sessions"
    __table_args__ = (UniqueConstraint("device_id", "stream_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id", ondelete="SET NULL"), index=True)
    stream_id: Mapped[str] = mapped_column(String(64))
    fs: Mapped[float] = mapped_column(Float)
    lead_names: Mapped[list[str]] = mapped_column(JSON)
    units: Mapped[str] = mapped_column(String(16), default="mV")
    gain: Mapped[float] = mapped_column(Float)
    baseline: Mapped[int] = mapped_column(Integer, default=0)
    firmware: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    device: Mapped[Device] = relationship()


class SignalChunk(Base):
    """A block of raw samples (``storage.codec`` payload) of one session.

    ``(session_id, first_seq)`` is unique, which makes writes idempotent: a
    resent block is recognised and not stored twice. ``checksum`` is the
    SHA-256 of the plain payload and is verified on every read.
    """

    __tablename__ = "signal_chunks"
    __table_args__ = (
        UniqueConstraint("session_id", "first_seq"),
        Index("ix_signal_chunks_session_id_t_start", "session_id", "t_start"),
        CheckConstraint("n_samples > 0", name="n_samples_positive"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("recording_sessions.id", ondelete="CASCADE"))
    first_seq: Mapped[int] = mapped_column(BigInteger)
    n_samples: Mapped[int] = mapped_column(Integer)
    t_start: Mapped[datetime] = mapped_column(UTCDateTime)
    t_end: Mapped[datetime] = mapped_column(UTCDateTime)
    codec: Mapped[str] = mapped_column(String(32))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    checksum: Mapped[str] = mapped_column(String(64))
    #: Id of the data key the payload is encrypted under; ``None``: stored in clear.
    key_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def end_seq(self) -> int:
        """Sequence number one past the chunk's last sample."""
        return self.first_seq + self.n_samples


class Beat(Base):
    """An annotated beat: R-peak position, class probabilities, model version."""

    __tablename__ = "beats"
    __table_args__ = (
        UniqueConstraint("session_id", "r_peak_seq"),
        Index("ix_beats_patient_id_t", "patient_id", "t"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("recording_sessions.id", ondelete="CASCADE"))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id", ondelete="SET NULL"))
    t: Mapped[datetime] = mapped_column(UTCDateTime)
    r_peak_seq: Mapped[int] = mapped_column(BigInteger)
    label: Mapped[str] = mapped_column(String(1))
    p_n: Mapped[float] = mapped_column(Float)
    p_s: Mapped[float] = mapped_column(Float)
    p_v: Mapped[float] = mapped_column(Float)
    p_f: Mapped[float] = mapped_column(Float)
    p_q: Mapped[float] = mapped_column(Float)
    p_abnormal: Mapped[float | None] = mapped_column(Float)
    p_early_alarm: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(64))


class Vitals(Base):
    """Vital signs at one time; any of them may be missing."""

    __tablename__ = "vitals"
    __table_args__ = (Index("ix_vitals_patient_id_t", "patient_id", "t"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    session_id: Mapped[int | None] = mapped_column(ForeignKey("recording_sessions.id", ondelete="SET NULL"))
    t: Mapped[datetime] = mapped_column(UTCDateTime)
    hr_ecg: Mapped[float | None] = mapped_column(Float)
    spo2: Mapped[float | None] = mapped_column(Float)
    pulse: Mapped[float | None] = mapped_column(Float)
    temperature: Mapped[float | None] = mapped_column(Float)


class Alarm(Base):
    """An alarm of a patient, from raise to resolution."""

    __tablename__ = "alarms"
    __table_args__ = (Index("ix_alarms_patient_id_started_at", "patient_id", "started_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    priority: Mapped[AlarmPriority] = mapped_column(_enum(AlarmPriority, "priority"))
    state: Mapped[AlarmState] = mapped_column(_enum(AlarmState, "state"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    detail: Mapped[str] = mapped_column(String(255), default="")
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(Text)

    acknowledged_by: Mapped[User | None] = relationship()


class AuditEntry(Base):
    """One line of the append-only audit log.

    Rows are never updated or deleted: the ORM refuses it
    (:class:`AppendOnlyError`) and the migration adds database triggers that
    refuse it too.
    """

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ApiToken(Base):
    """A bearer token of an EHR system that reads the FHIR API.

    Only the SHA-256 of the token is stored; the token itself is shown once
    when an administrator issues it. ``ward`` scopes the token like a
    clinician (``None``: every patient); a revoked token is refused.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    ward: Mapped[str | None] = mapped_column(String(64))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AppendOnlyError(RuntimeError):
    """An audit log entry was about to be changed or deleted."""


@event.listens_for(AuditEntry, "before_update")
@event.listens_for(AuditEntry, "before_delete")
def _refuse_audit_change(mapper: Mapper[AuditEntry], connection: object, target: AuditEntry) -> None:
    raise AppendOnlyError(f"the audit log is append-only; entry {target.id} cannot be changed or deleted")
