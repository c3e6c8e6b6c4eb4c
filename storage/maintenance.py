"""Jobs over all stored data: verify integrity, rotate the data key, purge expired data.

Each job walks its table in keyset batches (``id > last ORDER BY id LIMIT
n``), one short transaction per batch, so that none holds a table in memory
or locks it for long, and an interrupted rotation or purge carries on where
it stopped when run again. The command-line interface (``cardiac-monitor
storage verify``, ``keys rotate``, ``purge``) wraps these functions; see
``docs/security.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, Table, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session

from storage.codec import CodecError
from storage.crypto import NOTE_PREFIX, DataCipher, note_associated_data, open_note, seal_chunk
from storage.engine import Database
from storage.enums import AlarmState
from storage.errors import DataKeyError, TamperedDataError, UnsupportedCodecError
from storage.integrity import StoredChunk, verified_block, verified_payload
from storage.models import Alarm, Beat, SignalChunk, Vitals
from storage.queries import append_audit
from storage.types import utcnow

__all__ = [
    "MAX_LISTED_PROBLEMS",
    "Problem",
    "PurgeReport",
    "RotationReport",
    "VerifyReport",
    "purge_expired",
    "retention_cutoff",
    "rotate_keys",
    "verify_storage",
]

#: Wraps the batch numbers of a job, e.g. in a tqdm progress bar.
Progress = Callable[[Iterable[int]], Iterable[int]]

#: Most problems a report lists; beyond it they are only counted (a lost key
#: makes every chunk a problem).
MAX_LISTED_PROBLEMS = 1000


@dataclass(frozen=True)
class Problem:
    """A stored value that could not be read back intact.

    Attributes
    ----------
    kind : str
        ``"tampered"`` (authentication or checksum failed),
        ``"undecryptable"`` (its key is not loaded) or ``"unreadable"``
        (unknown codec, undecodable payload).
    what : str
        The value, e.g. ``"signal chunk 12"`` or ``"note of alarm 3"``.
    message : str
        The error.
    """

    kind: str
    what: str
    message: str


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_storage`.

    Attributes
    ----------
    chunks, clear_chunks : int
        Signal chunks checked, and how many of them are stored in clear.
    notes, clear_notes : int
        Alarm notes checked, and how many of them are stored in clear.
    problems : list of Problem
        The chunks and notes that are tampered with, undecryptable or
        unreadable: the first :data:`MAX_LISTED_PROBLEMS` of them.
    problem_count : int
        How many there are in all.
    """

    chunks: int = 0
    clear_chunks: int = 0
    notes: int = 0
    clear_notes: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        """Whether every value read back intact."""
        return self.problem_count == 0


@dataclass
class RotationReport:
    """Outcome of :func:`rotate_keys`: what is now under ``key_id``, and what could not be.

    ``problems`` lists the first :data:`MAX_LISTED_PROBLEMS` values left as
    they were, ``problem_count`` counts them all.
    """

    key_id: str
    chunks: int = 0
    notes: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0


@dataclass
class PurgeReport:
    """Outcome of :func:`purge_expired`: rows deleted (or, dry run, to delete) per table."""

    cutoff: datetime
    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)


def retention_cutoff(days: int, *, now: datetime | None = None) -> datetime:
    """The cutoff of a retention period: ``now - days``.

    Raises
    ------
    ValueError
        If ``days`` is below 1.
    """
    if days < 1:
        raise ValueError(f"`days` must be at least 1, got {days}")
    return (now or utcnow()) - timedelta(days=days)


def verify_storage(
    db: Database, *, batch: int = 200, progress: Progress | None = None, actor: str = "system"
) -> VerifyReport:
    """Read back every signal chunk and encrypted note; report what is not intact.

    Each chunk is decrypted (under the database's :attr:`Database.cipher`),
    its checksum verified and its payload decoded; each encrypted note is
    decrypted. Nothing is changed; the run is recorded in the audit log
    (``storage.verify``, with the counts).

    Parameters
    ----------
    db : Database
        The database, with the keys to read it.
    batch : int
        Chunks per transaction.
    progress : callable, optional
        Wraps the batch numbers (e.g. a tqdm bar).
    actor : str
        Who runs it, for the audit log.
    """
    _check_batch(batch)
    report = VerifyReport()
    chunks = _table(SignalChunk)
    for _, rows in _walk(db, chunks, [], batch, progress):
        for row in rows:
            report.chunks += 1
            report.clear_chunks += row.key_id is None
            try:
                verified_block(db.cipher, **_chunk_fields(row))
            except Exception as exc:
                _add_problem(report, _problem(f"signal chunk {row.id}", exc))
    alarms = _table(Alarm)
    for _, rows in _walk(db, alarms, [alarms.c.note.is_not(None)], batch * 10, None):
        for row in rows:
            report.notes += 1
            report.clear_notes += not row.note.startswith(NOTE_PREFIX)
            try:
                open_note(db.cipher, row.id, row.note)
            except Exception as exc:
                _add_problem(report, _problem(f"note of alarm {row.id}", exc))
    with db.session() as session:
        append_audit(
            session,
            actor,
            "storage.verify",
            details={
                "chunks": report.chunks,
                "clear_chunks": report.clear_chunks,
                "notes": report.notes,
                "clear_notes": report.clear_notes,
                "problems": report.problem_count,
            },
        )
    return report


def rotate_keys(
    db: Database, *, batch: int = 100, progress: Progress | None = None, actor: str = "system"
) -> RotationReport:
    """Re-encrypt under the current key every chunk and note that is not under it.

    Chunks and notes under a previous key (which must still be loaded, e.g.
    through ``CARDIAC_DATA_KEY_PREVIOUS``) or stored in clear are opened,
    verified, and sealed under the current key, ``batch`` chunks per
    transaction. A value that does not verify is left as it is and reported:
    re-encrypting it would hide the tampering. Running it again after an
    interruption carries on with what is left. The audit log gets
    ``keys.rotate.start`` (with what is to do) and ``keys.rotate`` (with what
    was done).

    Raises
    ------
    ValueError
        If the database has no data key (:attr:`Database.cipher` is ``None``).
    """
    _check_batch(batch)
    cipher = db.cipher
    if cipher is None:
        raise ValueError("no data key is configured: set CARDIAC_DATA_KEY (see docs/security.md)")
    report = RotationReport(key_id=cipher.key_id)
    chunks, alarms = _table(SignalChunk), _table(Alarm)
    stale_chunks = [or_(chunks.c.key_id.is_(None), chunks.c.key_id != cipher.key_id)]
    stale_notes = [
        alarms.c.note.is_not(None),
        ~alarms.c.note.startswith(f"{NOTE_PREFIX}{cipher.key_id}:", autoescape=True),
    ]
    with db.session() as session:
        todo = {
            "chunks": _count(session, chunks, stale_chunks),
            "notes": _count(session, alarms, stale_notes),
        }
        append_audit(session, actor, "keys.rotate.start", details={"key_id": cipher.key_id, **todo})
    for session, rows in _walk(db, chunks, stale_chunks, batch, progress):
        updates = [u for row in rows if (u := _resealed_chunk(cipher, row, report)) is not None]
        if updates:
            stmt = (
                update(chunks)
                .where(chunks.c.id == bindparam("b_id"))
                .values(payload=bindparam("b_payload"), key_id=cipher.key_id)
            )
            session.connection().execute(stmt, updates)
            report.chunks += len(updates)
    for session, rows in _walk(db, alarms, stale_notes, batch * 10, None):
        notes = [n for row in rows if (n := _resealed_note(cipher, row, report)) is not None]
        if notes:
            stmt = update(alarms).where(alarms.c.id == bindparam("b_id")).values(note=bindparam("b_note"))
            session.connection().execute(stmt, notes)
            report.notes += len(notes)
    with db.session() as session:
        append_audit(
            session,
            actor,
            "keys.rotate",
            details={
                "key_id": cipher.key_id,
                "chunks": report.chunks,
                "notes": report.notes,
                "problems": report.problem_count,
            },
        )
    return report


def purge_expired(
    db: Database,
    cutoff: datetime,
    *,
    dry_run: bool = False,
    batch: int = 1000,
    progress: Progress | None = None,
    actor: str = "system",
) -> PurgeReport:
    """Delete the data older than ``cutoff``: chunks, beats, vitals, resolved alarms.

    A signal chunk goes when its last sample is before the cutoff, beats and
    vitals when their time is, an alarm when it ended before the cutoff and
    is resolved (an alarm nobody acknowledged stays). Recording sessions,
    patients, devices, users and the audit log stay. Rows are deleted
    ``batch`` at a time, each batch in its own transaction, so a purge never
    loads a table and an interrupted one is finished by running it again.
    The audit log gets ``data.purge.start`` and ``data.purge`` with the
    counts; a dry run only counts, and changes nothing.

    Parameters
    ----------
    db : Database
        The database.
    cutoff : datetime
        Timezone-aware, not in the future.
    dry_run : bool
        Count what would be deleted, delete nothing.
    batch : int
        Rows per DELETE.
    progress : callable, optional
        Wraps the batch numbers (e.g. a tqdm bar).
    actor : str
        Who runs it, for the audit log.

    Raises
    ------
    ValueError
        If ``cutoff`` is naive or in the future, or ``batch`` below 1.
    """
    _check_batch(batch)
    if cutoff.tzinfo is None or cutoff.utcoffset() is None:
        raise ValueError(f"`cutoff` must be timezone-aware, got naive {cutoff.isoformat()}")
    if cutoff > utcnow():
        raise ValueError(f"`cutoff` must not be in the future, got {cutoff.isoformat()}")
    targets: list[tuple[str, Table, ColumnElement[bool]]] = [
        ("signal_chunks", _table(SignalChunk), SignalChunk.t_end <= cutoff),
        ("beats", _table(Beat), Beat.t < cutoff),
        ("vitals", _table(Vitals), Vitals.t < cutoff),
        ("alarms", _table(Alarm), and_(Alarm.ended_at < cutoff, Alarm.state == AlarmState.RESOLVED)),
    ]
    with db.session() as session:
        expected = {name: _count(session, table, [cond]) for name, table, cond in targets}
        if not dry_run:
            details = {"cutoff": cutoff.isoformat(), **expected}
            append_audit(session, actor, "data.purge.start", details=details)
    report = PurgeReport(cutoff=cutoff, dry_run=dry_run)
    if dry_run:
        report.counts = expected
        return report
    steps = _Steps(sum(math.ceil(n / batch) for n in expected.values()), progress)
    for name, table, cond in targets:
        report.counts[name] = 0
        while True:
            stmt = delete(table).where(table.c.id.in_(select(table.c.id).where(cond).limit(batch)))
            with db.session() as session:
                deleted = session.connection().execute(stmt).rowcount
            if not deleted:
                break
            report.counts[name] += deleted
            steps.advance()
    steps.finish()
    with db.session() as session:
        append_audit(session, actor, "data.purge", details={"cutoff": cutoff.isoformat(), **report.counts})
    return report


# Internals -------------------------------------------------------------------


class _Steps:
    """Advance a progress wrapper over ``range(total)`` one batch at a time."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self._it = iter(progress(range(total)) if progress is not None else range(total))

    def advance(self) -> None:
        next(self._it, None)

    def finish(self) -> None:
        for _ in self._it:  # the job may need fewer batches than counted
            pass


def _check_batch(batch: int) -> None:
    if batch < 1:
        raise ValueError(f"`batch` must be at least 1, got {batch}")


def _table(model: type[SignalChunk | Beat | Vitals | Alarm]) -> Table:
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"expected a Table, got {type(table).__name__}")
    return table


def _count(session: Session, table: Any, where: Sequence[ColumnElement[bool]]) -> int:
    return int(session.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def _walk(
    db: Database,
    table: Any,
    where: Sequence[ColumnElement[bool]],
    batch: int,
    progress: Progress | None,
) -> Iterator[tuple[Session, Sequence[Row[Any]]]]:
    """Rows of ``table`` matching ``where``, by id, a batch per transaction (committed after use)."""
    with db.session() as session:
        total = _count(session, table, where)
    steps = _Steps(math.ceil(total / batch), progress)
    last: int | None = None
    while True:
        stmt: Select[Any] = select(table).where(*where)
        if last is not None:
            stmt = stmt.where(table.c.id > last)
        with db.session() as session:
            rows = session.execute(stmt.order_by(table.c.id).limit(batch)).all()
            if not rows:
                break
            yield session, rows
        last = rows[-1].id
        steps.advance()
    steps.finish()


def _chunk_fields(row: Row[Any]) -> StoredChunk:
    return {
        "chunk_id": row.id,
        "session_id": row.session_id,
        "first_seq": row.first_seq,
        "n_samples": row.n_samples,
        "codec": row.codec,
        "stored": row.payload,
        "digest": row.checksum,
        "key_id": row.key_id,
    }


def _problem(what: str, exc: Exception) -> Problem:
    """Classify a read failure; anything unexpected propagates."""
    if isinstance(exc, DataKeyError):
        return Problem("undecryptable", what, str(exc))
    if isinstance(exc, TamperedDataError):
        return Problem("tampered", what, str(exc))
    if isinstance(exc, UnsupportedCodecError | CodecError | UnicodeDecodeError):
        return Problem("unreadable", what, str(exc))
    raise exc


def _add_problem(report: VerifyReport | RotationReport, problem: Problem) -> None:
    report.problem_count += 1
    if len(report.problems) < MAX_LISTED_PROBLEMS:
        report.problems.append(problem)


def _resealed_chunk(cipher: DataCipher, row: Row[Any], report: RotationReport) -> dict[str, Any] | None:
    fields = _chunk_fields(row)
    try:
        plain = verified_payload(cipher, **fields)
    except Exception as exc:
        _add_problem(report, _problem(f"signal chunk {row.id}", exc))
        return None
    sealed = seal_chunk(
        cipher,
        plain,
        session_id=row.session_id,
        first_seq=row.first_seq,
        n_samples=row.n_samples,
        codec=row.codec,
    )
    return {"b_id": row.id, "b_payload": sealed}


def _resealed_note(cipher: DataCipher, row: Row[Any], report: RotationReport) -> dict[str, Any] | None:
    try:
        plain = open_note(cipher, row.id, row.note)
    except Exception as exc:
        _add_problem(report, _problem(f"note of alarm {row.id}", exc))
        return None
    if plain is None:  # pragma: no cover - excluded by the query
        return None
    return {"b_id": row.id, "b_note": cipher.encrypt_text(plain, note_associated_data(row.id))}
