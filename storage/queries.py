"""Reads and writes that the ingest server and the dashboard share.

Every function takes an open :class:`~sqlalchemy.orm.Session` and leaves the
transaction to the caller (``with db.session() as session: ...``), so that a
frame's samples, its beats and its audit line commit together or not at all.

Reads by time window stream: they iterate rows with ``yield_per`` (a
server-side cursor on PostgreSQL) and decode one chunk at a time, so reading
an hour of a week-long recording never holds the week in memory. Consume the
iterators inside the session.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from sqlalchemy import ColumnElement, Select, Table, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session, object_session

from storage.codec import CODEC_NAME, SampleBlock, checksum, encode_block
from storage.crypto import DataCipher, seal_chunk, session_cipher
from storage.enums import AlarmState
from storage.errors import ChunkConflictError, StorageError
from storage.integrity import verified_block
from storage.models import Alarm, AuditEntry, Base, Beat, Device, RecordingSession, SignalChunk, Vitals
from storage.types import utcnow

__all__ = [
    "MAX_CHUNK_SECONDS",
    "ChunkLayout",
    "WindowBlock",
    "acknowledge_alarm",
    "add_beats",
    "add_vitals",
    "alarms_between",
    "append_audit",
    "audit_entries",
    "beats_between",
    "chunk_time",
    "create_device",
    "device_for_token",
    "find_gaps",
    "hash_token",
    "insert_chunk",
    "insert_chunks",
    "iter_samples",
    "load_block",
    "open_alarms",
    "open_recording",
    "stored_ranges",
    "update_device_status",
    "update_device_status_by_id",
    "vitals_between",
]

#: Rows fetched per round trip by the streaming reads.
DEFAULT_BATCH = 32

#: Longest chunk accepted, in seconds. Bounding it lets window reads use the
#: ``(session_id, t_start)`` index for both ends of the window.
MAX_CHUNK_SECONDS = 600.0

_ModelT = TypeVar("_ModelT", bound=Base)


@dataclass(frozen=True)
class WindowBlock:
    """Contiguous samples of one recording session inside a time window.

    Attributes
    ----------
    session_id : int
        The recording session.
    t0 : datetime
        Time of ``block.samples[0]`` (UTC).
    block : SampleBlock
        The samples, trimmed to the window; ``block.first_seq`` says where
        they sit in the stream. Consecutive blocks whose sequence numbers do
        not meet have a gap between them: nothing is invented to fill it.
    """

    session_id: int
    t0: datetime
    block: SampleBlock


class ChunkLayout(Protocol):
    """What storing samples needs to know of their recording session.

    A :class:`~storage.models.RecordingSession` has all of it; the ingest
    server passes a plain copy, so that it need not load the row per write.
    """

    @property
    def id(self) -> int:
        """The recording session's id."""
        ...

    @property
    def fs(self) -> float:
        """Sampling rate in Hz."""
        ...

    @property
    def lead_names(self) -> Sequence[str]:
        """One name per column of the samples."""
        ...

    @property
    def gain(self) -> float:
        """ADC counts per physical unit."""
        ...

    @property
    def baseline(self) -> int:
        """ADC count of zero."""
        ...

    @property
    def started_at(self) -> datetime:
        """Time of sample 0."""
        ...


# Devices ---------------------------------------------------------------------


def hash_token(token: str) -> str:
    """SHA-256 of a device token, hex. Tokens are random, so no salt is needed."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_device(session: Session, device_uid: str, token: str, *, patient_id: int | None = None) -> Device:
    """Register a device; only the hash of ``token`` is stored."""
    device = Device(device_uid=device_uid, token_hash=hash_token(token), patient_id=patient_id)
    session.add(device)
    session.flush()
    return device


def device_for_token(session: Session, token: str) -> Device | None:
    """The device that ``token`` belongs to (revoked ones too), or ``None``.

    The caller refuses a device whose ``revoked_at`` is set.
    """
    return session.scalar(select(Device).where(Device.token_hash == hash_token(token)))


def update_device_status(
    session: Session,
    device: Device,
    *,
    seen_at: datetime,
    battery: float | None = None,
    rssi: int | None = None,
    firmware: str | None = None,
) -> None:
    """Record that a device was heard from, with what it reported (``None``: unchanged)."""
    device.last_seen_at = seen_at
    if battery is not None:
        device.battery = battery
    if rssi is not None:
        device.rssi = rssi
    if firmware is not None:
        device.firmware = firmware


def update_device_status_by_id(
    session: Session,
    device_id: int,
    *,
    seen_at: datetime,
    battery: float | None = None,
    rssi: int | None = None,
) -> None:
    """:func:`update_device_status` with one UPDATE by id, without loading the device.

    Raises
    ------
    StorageError
        If no device has this id (it was deleted).
    """
    values: dict[str, Any] = {"device_id": device_id, "last_seen_at": seen_at}
    if battery is not None:
        values["battery"] = battery
    if rssi is not None:
        values["rssi"] = rssi
    result = session.connection().execute(_device_status_stmt(), values)  # SET what ``values`` names
    if result.rowcount == 0:
        raise StorageError(f"device {device_id} no longer exists")


# Recording sessions and signal chunks ------------------------------------------


def open_recording(
    session: Session,
    device: Device,
    *,
    stream_id: str,
    fs: float,
    lead_names: Sequence[str],
    gain: float,
    started_at: datetime,
    baseline: int = 0,
    units: str = "mV",
    firmware: str | None = None,
) -> tuple[RecordingSession, bool]:
    """Get the recording session of ``(device, stream_id)``, creating it if new.

    Returns
    -------
    (RecordingSession, bool)
        The session, and whether it was created now. An existing session is
        returned unchanged; comparing its rate and leads with the new hello is
        the caller's business.
    """
    existing = session.scalar(
        select(RecordingSession).where(
            RecordingSession.device_id == device.id, RecordingSession.stream_id == stream_id
        )
    )
    if existing is not None:
        return existing, False
    recording = RecordingSession(
        device_id=device.id,
        patient_id=device.patient_id,
        stream_id=stream_id,
        fs=fs,
        lead_names=list(lead_names),
        gain=gain,
        baseline=baseline,
        units=units,
        firmware=firmware,
        started_at=started_at,
    )
    session.add(recording)
    session.flush()
    return recording, True


def chunk_time(recording: RecordingSession, seq: int) -> datetime:
    """Time of sample ``seq`` of ``recording``: ``started_at + seq / fs``."""
    return recording.started_at + timedelta(seconds=seq / recording.fs)


def insert_chunk(session: Session, recording: ChunkLayout, samples: npt.ArrayLike, first_seq: int) -> bool:
    """Store a block of samples once, keyed by ``(recording, first_seq)``.

    Parameters
    ----------
    session : Session
        Open session; the caller commits.
    recording : ChunkLayout
        The stream the samples belong to (a
        :class:`~storage.models.RecordingSession`); it gives rate, leads and gain.
    samples : array_like
        ``(n_samples, n_leads)`` int16 ADC counts.
    first_seq : int
        Sequence number of the first row.

    Returns
    -------
    bool
        ``True`` if stored now, ``False`` if the same block was already
        stored (a resend).

    Raises
    ------
    ChunkConflictError
        If a different block is stored under the same key, or the block
        overlaps another stored block.
    storage.codec.CodecError
        If the samples do not match the recording's lead count.
    ValueError
        If the block is longer than :data:`MAX_CHUNK_SECONDS`.
    """
    return insert_chunks(session, recording, [(samples, first_seq)])[0]


def insert_chunks(
    session: Session, recording: ChunkLayout, blocks: Sequence[tuple[npt.ArrayLike, int]]
) -> list[bool]:
    """Store several blocks of one recording session, each once, with few statements.

    :func:`insert_chunk` for many blocks: every block is encoded and checked
    first (against the others and against what is stored, with one query per
    run of adjacent blocks), then all new ones are inserted with one
    multi-row ``INSERT ... ON CONFLICT DO NOTHING``. Nothing is written
    unless every block passes its checks; an error raised by the insert
    itself leaves the transaction for the caller to roll back.

    Parameters
    ----------
    session : Session
        Open session; the caller commits.
    recording : ChunkLayout
        The stream the samples belong to.
    blocks : sequence of (array_like, int)
        ``(samples, first_seq)`` pairs, in any order; see :func:`insert_chunk`.

    Returns
    -------
    list of bool
        Per block, in the given order: ``True`` if stored now, ``False`` if
        the same block was already stored or came earlier in ``blocks``.

    Raises
    ------
    ChunkConflictError
        If a block overlaps a stored block or another block of ``blocks``
        with different content.
    storage.codec.CodecError
        If the samples do not match the recording's lead count.
    ValueError
        If a block is longer than :data:`MAX_CHUNK_SECONDS`.

    Examples
    --------
    >>> insert_chunks(session, recording, [(first, 0), (second, 90)])  # doctest: +SKIP
    [True, True]
    """
    cipher = session_cipher(session)
    created_at = utcnow()
    rows = [_chunk_row(recording, cipher, samples, first_seq, created_at) for samples, first_seq in blocks]
    new: list[dict[str, Any]] = []  # rows to insert, by first_seq, none overlapping another
    for row in sorted(rows, key=lambda r: int(r["first_seq"])):
        if new and _end(new[-1]) > row["first_seq"]:
            _check_same(recording.id, row, new[-1], stored=False)
            continue
        new.append(row)
    fresh = []
    for run in _runs(new):
        stored = _stored_around(session, recording.id, int(run[0]["first_seq"]), _end(run[-1]))
        starts = [first for first, _, _ in stored]
        for row in run:
            # Stored chunks never overlap, so only the last one starting before
            # the row's end can overlap it.
            i = bisect.bisect_left(starts, _end(row)) - 1
            if i >= 0 and stored[i][0] + stored[i][1] > row["first_seq"]:
                first, n, digest = stored[i]
                _check_same(recording.id, row, {"first_seq": first, "n_samples": n, "checksum": digest})
            else:
                fresh.append(row)
    inserted = _insert_chunk_rows(session, fresh)
    if len(inserted) < len(fresh):  # a concurrent writer stored some of them first
        _check_stored_equal(session, recording.id, [r for r in fresh if r["first_seq"] not in inserted])
    done = set(inserted)
    out = []
    for row in rows:
        out.append(row["first_seq"] in done)
        done.discard(row["first_seq"])  # a block given twice is stored once
    return out


def load_block(chunk: SignalChunk, *, cipher: DataCipher | None = None) -> SampleBlock:
    """Decode a stored chunk after decrypting it and verifying its checksum.

    Parameters
    ----------
    chunk : SignalChunk
        The row.
    cipher : DataCipher, optional
        Keys to open an encrypted chunk with (default: those of the session
        the chunk belongs to).

    Raises
    ------
    ChecksumMismatchError
        If the payload's SHA-256 differs from the stored checksum.
    storage.errors.TamperedDataError
        If an encrypted payload fails authentication.
    storage.errors.DataKeyError
        If the chunk is encrypted under a key that is not loaded.
    UnsupportedCodecError
        If the chunk was written with an unknown codec.
    """
    if cipher is None:
        owner = object_session(chunk)
        cipher = session_cipher(owner) if owner is not None else None
    return verified_block(
        cipher,
        chunk_id=chunk.id,
        session_id=chunk.session_id,
        first_seq=chunk.first_seq,
        n_samples=chunk.n_samples,
        codec=chunk.codec,
        stored=chunk.payload,
        digest=chunk.checksum,
        key_id=chunk.key_id,
    )


def stored_ranges(session: Session, recording_id: int) -> list[tuple[int, int]]:
    """Stored sample ranges ``[start, end)`` of a recording session, merged.

    Reads only the chunk keys, never the payloads. Use it to rebuild the
    ingest sequence tracker after a restart.
    """
    stmt = (
        select(SignalChunk.first_seq, SignalChunk.n_samples)
        .where(SignalChunk.session_id == recording_id)
        .order_by(SignalChunk.first_seq)
        .execution_options(yield_per=1000)
    )
    merged: list[tuple[int, int]] = []
    with session.execute(stmt) as rows:
        for first, n in rows:
            if merged and first <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], first + n))
            else:
                merged.append((first, first + n))
    return merged


def find_gaps(session: Session, recording_id: int) -> list[tuple[int, int]]:
    """Missing sample ranges ``[start, end)`` between the stored chunks."""
    ranges = stored_ranges(session, recording_id)
    return [(a_end, b_start) for (_, a_end), (b_start, _) in pairwise(ranges)]


def iter_samples(
    session: Session,
    patient_id: int,
    start: datetime,
    end: datetime,
    *,
    batch: int = DEFAULT_BATCH,
) -> Iterator[WindowBlock]:
    """Samples of a patient in ``[start, end)``, one stored chunk at a time.

    Parameters
    ----------
    session : Session
        Open session; consume the iterator before closing it.
    patient_id : int
        The patient, across every recording session assigned to them.
    start, end : datetime
        Timezone-aware window bounds.
    batch : int
        Chunks fetched per round trip.

    Yields
    ------
    WindowBlock
        In time order; each checksum-verified and trimmed to the window.

    Raises
    ------
    ChecksumMismatchError, storage.errors.TamperedDataError
        When a chunk is corrupted or was tampered with.
    storage.errors.DataKeyError
        When a chunk is encrypted under a key that is not loaded.
    ValueError
        If ``end`` is not after ``start``.
    """
    _check_window(start, end)
    cipher = session_cipher(session)
    stmt = (
        select(
            SignalChunk.id,
            SignalChunk.codec,
            SignalChunk.payload,
            SignalChunk.checksum,
            SignalChunk.key_id,
            SignalChunk.first_seq,
            SignalChunk.n_samples,
            RecordingSession.id,
            RecordingSession.started_at,
        )
        .join(RecordingSession, SignalChunk.session_id == RecordingSession.id)
        .where(
            RecordingSession.patient_id == patient_id,
            SignalChunk.t_start < end,
            SignalChunk.t_start > start - timedelta(seconds=MAX_CHUNK_SECONDS),
            SignalChunk.t_end > start,
        )
        .order_by(SignalChunk.t_start, SignalChunk.session_id, SignalChunk.first_seq)
        .execution_options(yield_per=batch)
    )
    with session.execute(stmt) as rows:
        for chunk_id, codec, payload, digest, key_id, first_seq, n_samples, recording_id, started_at in rows:
            block = verified_block(
                cipher,
                chunk_id=chunk_id,
                session_id=recording_id,
                first_seq=first_seq,
                n_samples=n_samples,
                codec=codec,
                stored=payload,
                digest=digest,
                key_id=key_id,
            )
            window = _trim(recording_id, started_at, block, start, end)
            if window is not None:
                yield window


# Beats, vitals, alarms -------------------------------------------------------------


def add_beats(session: Session, beats: Iterable[Beat]) -> int:
    """Insert beats, skipping any already stored for the same R peak.

    Parameters
    ----------
    beats : iterable of Beat
        Transient (not added) :class:`~storage.models.Beat` objects.

    Returns
    -------
    int
        How many were new.
    """
    columns = [c.key for c in Beat.__table__.columns if c.key != "id"]
    rows = [{key: getattr(beat, key) for key in columns} for beat in beats]
    return _insert_ignoring_conflicts(session, Beat.__table__, rows) if rows else 0


def add_vitals(
    session: Session,
    patient_id: int,
    t: datetime,
    *,
    recording_id: int | None = None,
    hr_ecg: float | None = None,
    spo2: float | None = None,
    pulse: float | None = None,
    temperature: float | None = None,
) -> Vitals:
    """Store one vitals reading; missing values stay ``NULL``."""
    vitals = Vitals(
        patient_id=patient_id,
        session_id=recording_id,
        t=t,
        hr_ecg=hr_ecg,
        spo2=spo2,
        pulse=pulse,
        temperature=temperature,
    )
    session.add(vitals)
    session.flush()
    return vitals


def beats_between(
    session: Session, patient_id: int, start: datetime, end: datetime, *, batch: int = 1000
) -> Iterator[Beat]:
    """Beats of a patient with ``start <= t < end``, in time order, streamed."""
    stmt = select(Beat).where(Beat.patient_id == patient_id, *_window(Beat.t, start, end))
    return _stream(session, stmt.order_by(Beat.t, Beat.id), batch)


def vitals_between(
    session: Session, patient_id: int, start: datetime, end: datetime, *, batch: int = 1000
) -> Iterator[Vitals]:
    """Vitals of a patient with ``start <= t < end``, in time order, streamed."""
    stmt = select(Vitals).where(Vitals.patient_id == patient_id, *_window(Vitals.t, start, end))
    return _stream(session, stmt.order_by(Vitals.t, Vitals.id), batch)


def alarms_between(
    session: Session, patient_id: int, start: datetime, end: datetime, *, batch: int = 1000
) -> Iterator[Alarm]:
    """Alarms of a patient that were open at some time in ``[start, end)``, by start."""
    _check_window(start, end)
    stmt = select(Alarm).where(
        Alarm.patient_id == patient_id,
        Alarm.started_at < end,
        or_(Alarm.ended_at.is_(None), Alarm.ended_at >= start),
    )
    return _stream(session, stmt.order_by(Alarm.started_at, Alarm.id), batch)


def open_alarms(session: Session, patient_id: int) -> list[Alarm]:
    """Alarms of a patient that are not resolved, oldest first."""
    stmt = (
        select(Alarm)
        .where(Alarm.patient_id == patient_id, Alarm.state != AlarmState.RESOLVED)
        .order_by(Alarm.started_at, Alarm.id)
    )
    return list(session.scalars(stmt))


def acknowledge_alarm(
    session: Session,
    alarm: Alarm,
    *,
    user_id: int,
    at: datetime,
    note: str | None = None,
    resolve: bool = False,
) -> None:
    """Record an acknowledgement (and its audit line) on a stored alarm.

    ``resolve`` closes the alarm, as when a latched high alarm whose
    condition has ended is acknowledged (see :mod:`ingest.alarms`).
    """
    alarm.acknowledged_by_id = user_id
    alarm.acknowledged_at = at
    if note is not None:
        alarm.note = note
    alarm.state = AlarmState.RESOLVED if resolve else AlarmState.ACKNOWLEDGED
    append_audit(
        session,
        f"user:{user_id}",
        "alarm.acknowledge",
        target=f"alarm:{alarm.id}",
        details={"state": alarm.state.value, "note": note is not None},
        at=at,
    )


# Audit log ---------------------------------------------------------------------


def append_audit(
    session: Session,
    actor: str,
    action: str,
    *,
    target: str | None = None,
    details: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEntry:
    """Append one line to the audit log (it is never changed afterwards).

    Parameters
    ----------
    actor : str
        Who acted: ``"user:12"``, ``"device:ecg-7"``, ``"system"``.
    action : str
        What happened, dotted: ``"alarm.acknowledge"``, ``"device.revoke"``.
    target : str, optional
        What it happened to: ``"alarm:31"``.
    details : mapping, optional
        JSON-serialisable facts; never secrets or free-text notes.
    at : datetime, optional
        When (default: now).
    """
    entry = AuditEntry(
        actor=actor, action=action, target=target, details=dict(details or {}), at=at or utcnow()
    )
    session.add(entry)
    session.flush()
    return entry


def audit_entries(
    session: Session,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    batch: int = 1000,
) -> Iterator[AuditEntry]:
    """Audit lines with ``start <= at < end`` (either bound optional), in order."""
    stmt = select(AuditEntry)
    if start is not None:
        stmt = stmt.where(AuditEntry.at >= start)
    if end is not None:
        stmt = stmt.where(AuditEntry.at < end)
    return _stream(session, stmt.order_by(AuditEntry.at, AuditEntry.id), batch)


# Internals -------------------------------------------------------------------


def _check_window(start: datetime, end: datetime) -> None:
    for name, value in (("start", start), ("end", end)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"`{name}` must be timezone-aware, got naive {value.isoformat()}")
    if not end > start:
        raise ValueError(f"`end` must be after `start`, got {start.isoformat()} .. {end.isoformat()}")


def _window(
    column: InstrumentedAttribute[datetime], start: datetime, end: datetime
) -> tuple[ColumnElement[bool], ...]:
    """Conditions ``start <= column < end``, after checking the bounds."""
    _check_window(start, end)
    return (column >= start, column < end)


def _stream(session: Session, stmt: Select[_ModelT], batch: int) -> Iterator[_ModelT]:
    """Iterate the entities of ``stmt``, fetched ``batch`` rows at a time."""
    with session.scalars(stmt.execution_options(yield_per=batch)) as rows:
        yield from rows


def _insert_ignoring_conflicts(session: Session, table: Any, rows: list[dict[str, Any]]) -> int:
    """INSERT ... ON CONFLICT DO NOTHING; returns how many rows were inserted."""
    if not isinstance(table, Table):
        raise TypeError(f"expected a Table, got {type(table).__name__}")
    dialect = session.get_bind().dialect.name
    result = session.execute(_insert_ignoring_for(dialect, table).returning(table.c.id), rows)
    return len(result.all())


def _insert_ignoring_for(dialect: str, table: Table) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` into ``table`` in ``dialect``."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"idempotent inserts are implemented for SQLite and PostgreSQL, not {dialect}")


def _table(model: type[Base]) -> Table:
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"expected a Table, got {type(table).__name__}")
    return table


def _chunk_row(
    recording: ChunkLayout,
    cipher: DataCipher | None,
    samples: npt.ArrayLike,
    first_seq: int,
    created_at: datetime,
) -> dict[str, Any]:
    """The ``signal_chunks`` row of a block: encoded, checksummed, sealed when a cipher is loaded."""
    block = SampleBlock(
        samples=np.asarray(samples),
        fs=recording.fs,
        lead_names=tuple(recording.lead_names),
        gain=recording.gain,
        baseline=recording.baseline,
        first_seq=first_seq,
    )
    n_samples = int(block.samples.shape[0])
    end_seq = first_seq + n_samples
    if n_samples / recording.fs > MAX_CHUNK_SECONDS:
        raise ValueError(
            f"a chunk may hold at most {MAX_CHUNK_SECONDS:g} s of samples, got {n_samples} "
            f"samples at {recording.fs:g} Hz"
        )
    payload = encode_block(block)
    digest = checksum(payload)  # of the plain block: see storage.integrity
    stored = payload
    if cipher is not None:
        stored = seal_chunk(
            cipher,
            payload,
            session_id=recording.id,
            first_seq=first_seq,
            n_samples=n_samples,
            codec=CODEC_NAME,
        )
    return {
        "session_id": recording.id,
        "first_seq": first_seq,
        "n_samples": n_samples,
        "t_start": recording.started_at + timedelta(seconds=first_seq / recording.fs),
        "t_end": recording.started_at + timedelta(seconds=end_seq / recording.fs),
        "codec": CODEC_NAME,
        "payload": stored,
        "checksum": digest,
        "key_id": cipher.key_id if cipher is not None else None,
        "created_at": created_at,
    }


def _end(row: Mapping[str, Any]) -> int:
    return int(row["first_seq"]) + int(row["n_samples"])


def _check_same(
    recording_id: int, row: Mapping[str, Any], other: Mapping[str, Any], *, stored: bool = True
) -> None:
    """Nothing to do if ``row`` is the same block as ``other`` (stored, or of its batch), which it overlaps.

    Raises
    ------
    ChunkConflictError
        If they differ in position, length or content.
    """
    if (row["first_seq"], row["n_samples"], row["checksum"]) == (
        other["first_seq"],
        other["n_samples"],
        other["checksum"],
    ):
        return
    chunk = f"chunk [{other['first_seq']}, {_end(other)})"
    raise ChunkConflictError(
        f"samples [{row['first_seq']}, {_end(row)}) of recording session {recording_id} overlap the "
        f"{'stored ' + chunk if stored else chunk + ' of the same batch'} with different content"
    )


def _runs(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Rows (sorted, not overlapping) grouped into runs of adjacent blocks."""
    run: list[dict[str, Any]] = []
    for row in rows:
        if run and row["first_seq"] != _end(run[-1]):
            yield run
            run = []
        run.append(row)
    if run:
        yield run


def _stored_around(session: Session, recording_id: int, start: int, end: int) -> list[tuple[int, int, str]]:
    """``(first_seq, n_samples, checksum)`` of the stored chunks that may overlap ``[start, end)``.

    Those starting in ``[start, end)`` and the last one starting before
    ``start``, by ``first_seq``: one indexed range read.
    """
    params = {"session_id": recording_id, "start": start, "end": end}
    rows = session.connection().execute(_stored_around_stmt(), params)
    return [(int(first), int(n), str(digest)) for first, n, digest in rows]


def _insert_chunk_rows(session: Session, rows: list[dict[str, Any]]) -> set[int]:
    """Insert chunk rows, skipping keys already stored; the ``first_seq`` of those inserted."""
    if not rows:
        return set()
    stmt = _chunk_insert_stmt(session.get_bind().dialect.name)
    return {int(first) for first in session.connection().execute(stmt, rows).scalars()}


# The statements of the ingest path are built once: building and hashing a statement costs more
# CPU than running it. They are Core statements, executed on the session's connection.


@functools.cache
def _stored_around_stmt() -> Select[Any]:
    """The query of :func:`_stored_around`, with parameters ``session_id``, ``start`` and ``end``."""
    c = _table(SignalChunk).c
    session_id = bindparam("session_id", type_=c.session_id.type)
    start = bindparam("start", type_=c.first_seq.type)
    before = (
        select(func.max(c.first_seq)).where(c.session_id == session_id, c.first_seq < start).scalar_subquery()
    )
    return (
        select(c.first_seq, c.n_samples, c.checksum)
        .where(
            c.session_id == session_id,
            c.first_seq >= func.coalesce(before, start),
            c.first_seq < bindparam("end", type_=c.first_seq.type),
        )
        .order_by(c.first_seq)
    )


@functools.cache
def _chunk_insert_stmt(dialect: str) -> Any:
    """Idempotent insert of chunk rows returning the ``first_seq`` of those inserted."""
    table = _table(SignalChunk)
    return _insert_ignoring_for(dialect, table).returning(table.c.first_seq)


@functools.cache
def _device_status_stmt() -> Any:
    """UPDATE of the device whose id is the parameter ``device_id``."""
    table = _table(Device)
    return update(table).where(table.c.id == bindparam("device_id", type_=table.c.id.type))


def _check_stored_equal(session: Session, recording_id: int, rows: list[dict[str, Any]]) -> None:
    """Rows that a concurrent writer stored first must be the same blocks.

    Raises
    ------
    ChunkConflictError
        If one of them is stored with other content.
    """
    stored = session.execute(
        select(SignalChunk.first_seq, SignalChunk.n_samples, SignalChunk.checksum).where(
            SignalChunk.session_id == recording_id,
            SignalChunk.first_seq.in_([r["first_seq"] for r in rows]),
        )
    )
    by_key = {first: {"first_seq": first, "n_samples": n, "checksum": digest} for first, n, digest in stored}
    for row in rows:
        _check_same(recording_id, row, by_key.get(row["first_seq"], {**row, "checksum": None}))


def _seq_at(started_at: datetime, t: datetime, fs: float) -> int:
    """First sequence number whose sample time is at or after ``t``."""
    return math.ceil(round((t - started_at).total_seconds() * fs, 6))


def _trim(
    recording_id: int, started_at: datetime, block: SampleBlock, start: datetime, end: datetime
) -> WindowBlock | None:
    """The part of ``block`` inside ``[start, end)``, or ``None`` if empty."""
    lo = max(_seq_at(started_at, start, block.fs) - block.first_seq, 0)
    hi = min(_seq_at(started_at, end, block.fs) - block.first_seq, block.n_samples)
    if hi <= lo:
        return None
    first_seq = block.first_seq + lo
    trimmed = SampleBlock(
        samples=block.samples[lo:hi],
        fs=block.fs,
        lead_names=block.lead_names,
        gain=block.gain,
        baseline=block.baseline,
        first_seq=first_seq,
    )
    t0 = started_at + timedelta(seconds=first_seq / block.fs)
    return WindowBlock(session_id=recording_id, t0=t0, block=trimmed)
