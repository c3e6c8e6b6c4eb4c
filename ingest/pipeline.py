"""The per-patient streaming analysis: R peaks, classified beats, heart rate, quality, alarms.

:class:`AnalysisProcessor` is the :class:`~ingest.processing.StreamProcessor`
the server runs on every stored block of samples. Per session it keeps

* the **display trace**: a :class:`~ingest.processing.DisplayProcessor`
  (causal 0.5-40 Hz band-pass, a few tens of ms of group delay);
* the **model's front end**, read from the checkpoint
  (:class:`model.data.PreprocessConfig`): its causal filter run from the
  start of the stream at the device's rate, the beat window
  (``window_s``, ``pre_fraction``) cut with :func:`sigproc.beats.beat_windows`,
  and the RR features of :class:`sigproc.beats.StreamingRRFeatures`
  (``rr_local_beats``, ``rr_mean_beats``). When the network reads
  ``post_rr`` (``ModelConfig.use_post_rr``) a beat is classified once the
  next R peak is known: one RR interval of delay, the price of the
  feature the inter-patient literature finds most useful for S beats;
* **R peaks** from :class:`sigproc.peaks.StreamingPeakDetector` on the raw
  leads (the detector has its own band-pass), with absolute indices and a
  bounded reporting delay;
* a **signal-quality index** (:func:`sigproc.quality.assess_quality`) over
  the last ``quality.window_s`` (4 s) every ``quality_hop_s`` (1 s); an
  unreadable window starts a lead-off, flat-line or poor-signal technical
  condition in the :class:`~ingest.alarms.AlarmEngine`, which suppresses
  arrhythmia alarms while it lasts, and marks the beats classified meanwhile
  ``quality_ok=False`` (kept out of runs, rates and counts), as are the
  beats before the first window is judged (the quality is not known yet);
* the **heart rate**: the mean of the last 8 RR intervals between
  consecutive good-quality beats (60 / mean RR), updated every second of
  signal once 4 intervals are known, the averaging that
  ``AlarmLimits.hr_intervals`` describes (IEC 60601-2-27 asks that it be
  disclosed);
* the patient's :class:`~ingest.alarms.AlarmEngine` with the limits from
  ``patients.alarm_limits``.

Classification is **batched across patients**. The server calls the
processor from one worker thread, one block at a time; a beat that is ready
(window complete, next R peak known) waits in a shared queue until the
oldest waiting beat is ``batch_wait_s`` old, then every waiting beat of every
session goes through one convolutional encoding; each session's LSTM
context (the features of its last ``seq_len - 1`` beats, the state of
:class:`model.inference.BeatStream`) is carried between batches, so the
outputs equal :meth:`model.inference.BeatClassifier.predict` on the whole
stream. A session's classified beats, heart rate and alarm changes leave
with the events of its next call (at most one frame later), or at once
through :meth:`AnalysisProcessor.release` where the caller can deliver any
session's events (the workers of :class:`ShardedAnalysisProcessor`), or
with the next tick. Beats and heart rates are written together about
once a second, in one transaction and one multi-row insert each
(:func:`storage.add_beats` skips beats already stored, so a replayed
stream stores each beat once); alarms are inserted when raised and updated
when they change or resolve.

Cost. Per 0.25-s block of a two-lead 360-Hz stream the analysis takes
about 1.0-1.3 ms of CPU (``bench/pipeline_cpu.py``; 2.8 ms before the causal
filters ran all leads in one pass of scipy's compiled kernel, the detector
stopped re-designing its placing filter for every beat, and the quality
index stopped computing ``x**4`` through ``pow``). What remains is spread
over the detector, the quality index (its running median), the network
(whose per-call cost makes batches of a few beats cost several times more
per beat than batches of tens) and the alarm rules.

Time-driven alarms. The server calls :meth:`AnalysisProcessor.tick` about
once a second. For every session whose last block (or vitals reading)
arrived more than ``AlarmLimits.device_silent_s`` (10 s) ago on the wall
clock, the engine raises ``device_silent`` (medium, technical): the silence
is measured on the wall clock from the block's arrival, and mapped onto the
sample clock the engine keeps (last sample time + silence), so a device
whose sample clock runs ahead of or behind the wall clock (a replay, a
resend after a reconnect) neither raises it falsely nor late. A session whose
connection has ended is kept (its engine, without the signal buffers) so
that the alarm is raised after a disconnect too, and the engine carries on
when the stream resumes; replayed recordings are not kept. When data
resumes the alarm resolves. The tick also reconciles acknowledgements made
in the dashboard (:func:`storage.queries.acknowledge_alarm` updates the
``alarms`` row): an open alarm whose row was acknowledged after the engine
last heard of it is acknowledged in the engine too, so a latched high alarm
resolves and an acknowledged one stays quiet while its condition lasts.

Where it runs. :class:`AnalysisProcessor` runs in the server's worker
thread: simple, but it shares the interpreter lock with the event loop and
the storage thread, so on two cores the whole server stays within about one
core. :class:`ShardedAnalysisProcessor` runs the same analysis in worker
processes (sessions spread by id), each with its own interpreter and
database connection, and keeps only the display trace in the server's
process.

Denoising. :class:`sigproc.denoise.StreamingDenoiser` (EMD or wavelet on
overlapping windows) holds samples back by 2.75-9 s (its ``latency_s``;
9.25 s for the default EMD settings), far beyond the 2 s budget from an R
peak to its classified beat, and the shipped network was trained on the
causal band-pass alone, so denoised windows would not be the windows it
knows. The live analysis therefore reads the causal band-pass; the
windowed denoiser stays an offline tool (``evaluate denoise``) and a
candidate for the review trace.

Latency. Beat events carry ``t_arrival`` (server wall clock when the block
holding the R peak reached the server: ``block.received_at`` when the
server provides it, else when the processor got the block) and ``t_sent``
(when the processor handed the event to the server for publishing), in
seconds since the epoch.

References
----------
.. [1] IEC 60601-2-27:2011, particular requirements for ECG monitoring
   equipment: heart-rate averaging and alarm system delays (201.7.9.2.9).
.. [2] Ronihal et al. AI-driven IoT framework for advanced cardiac monitoring
   and analysis. Ingénierie des Systèmes d'Information 30(7), 2025.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session as DbSession

from ingest.alarms import (
    AlarmChange,
    AlarmEngine,
    AlarmLimits,
    AlarmNotFoundError,
    AlarmSnapshot,
    BeatEvent,
    TechnicalEvent,
    TechnicalKind,
    VitalsEvent,
)
from ingest.processing import DisplayProcessor, LiveEvent, StoredBlock, VitalsReading
from ingest.protocol import SeqKind
from ingest.replay import ReplaySignal
from model.inference import BeatClassifier, gate_beat
from sigproc.beats import StreamingRRFeatures, beat_windows, rr_features
from sigproc.filters import StreamingFilter
from sigproc.peaks import StreamingPeakDetector, detect_r_peaks
from sigproc.quality import Artifact, QualityConfig, assess_quality
from sigproc.rhythm import AFMonitor
from storage import Alarm, AlarmPriority, AlarmState, Beat, Database, Patient, Vitals, add_beats

__all__ = [
    "Agreement",
    "AnalysisProcessor",
    "OfflineBeats",
    "PipelineConfig",
    "ShardedAnalysisProcessor",
    "classify_offline",
    "live_agreement",
    "replay_offline",
]

logger = logging.getLogger(__name__)

#: Wall-clock seconds after which a beat handed to the network and never returned (its
#: batch failed) stops holding back the engine's progress bound (:meth:`_Session.progress`).
_IN_FLIGHT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of :class:`AnalysisProcessor` in physical units.

    Attributes
    ----------
    hr_intervals, hr_min_intervals : int
        Heart rate: 60 / mean of the last ``hr_intervals`` (8) RR intervals
        between consecutive good-quality beats; none with fewer than
        ``hr_min_intervals`` (4).
    hr_update_s : float
        Heart-rate update period in seconds of signal (1 s).
    quality : QualityConfig
        Thresholds of the signal-quality index; ``quality.window_s`` (4 s)
        is the window it judges.
    quality_hop_s : float
        A window is judged every ``quality_hop_s`` seconds (1 s: a beat,
        classified about 1.3 s after its R peak, is judged by a window
        that holds its peak).
    batch_wait_s : float
        Longest time a ready beat waits for others to share its batch.
    store_every_s : float
        Beats and heart rates are written to the database this often.
    hold_timeout_s : float
        A beat waiting for the next R peak (``post_rr``) is classified
        without it (``post_rr = pre_rr``, as :func:`sigproc.beats.rr_features`
        treats a record's last beat) once the signal is this far past it:
        a long pause still reaches the alarm rules.
    buffer_s : float
        Filtered signal kept per session for cutting windows.
    """

    hr_intervals: int = 8
    hr_min_intervals: int = 4
    hr_update_s: float = 1.0
    quality: QualityConfig = field(default_factory=QualityConfig)
    quality_hop_s: float = 1.0
    batch_wait_s: float = 0.1
    store_every_s: float = 1.0
    hold_timeout_s: float = 4.0
    buffer_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("hr_update_s", "quality_hop_s", "hold_timeout_s", "buffer_s", "store_every_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)}")
        if self.batch_wait_s < 0:
            raise ValueError(f"`batch_wait_s` must be >= 0, got {self.batch_wait_s}")
        if not 1 <= self.hr_min_intervals <= self.hr_intervals:
            raise ValueError(
                "`hr_min_intervals` must be between 1 and `hr_intervals`, "
                f"got {self.hr_min_intervals} and {self.hr_intervals}"
            )


class AnalysisProcessor:
    """Display trace, beats, heart rate, signal quality and alarms of every stream.

    Parameters
    ----------
    db : Database, optional
        Where beats, heart rates and alarms are stored and patients' alarm
        limits read; ``None`` stores nothing (offline use, tests).
    classifier : BeatClassifier, optional
        Default: the shipped weights (:meth:`BeatClassifier.load`), with
        torch limited to one thread: the analysis shares the machine with
        the event loop and the storage thread, and at the batch sizes of a
        live monitor (tens of beats) extra threads only add hand-off cost.
    config : PipelineConfig, optional
        Heart-rate, quality and batching settings.
    display : DisplayProcessor, optional
        The display trace (default band-pass settings).
    trace : bool
        Produce the display trace; :class:`ShardedAnalysisProcessor`'s
        workers leave it to the server's process.
    model_version : str, optional
        Stored with each beat; default :attr:`BeatClassifier.version` (the network and a digest
        of its weights and rules).
    wall_clock : callable
        Seconds since the epoch, for ``t_arrival`` / ``t_sent`` and batching.

    Notes
    -----
    All sessions share one lock: the server calls the processor from a
    single worker thread, and the lock keeps the shared batch consistent if
    it ever calls from several.

    Examples
    --------
    >>> server = IngestServer(db, live_secret=secret, processor=AnalysisProcessor(db))  # doctest: +SKIP
    """

    def __init__(
        self,
        db: Database | None = None,
        classifier: BeatClassifier | None = None,
        *,
        config: PipelineConfig | None = None,
        display: DisplayProcessor | None = None,
        trace: bool = True,
        model_version: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.classifier = classifier if classifier is not None else BeatClassifier.load(num_threads=1)
        self.config = config or PipelineConfig()
        self.display = (display or DisplayProcessor()) if trace else None
        self.model_version = (model_version or self.classifier.version)[:64]
        self._clock = wall_clock
        self._sessions: dict[int, _Session] = {}
        #: Ended streams of patients, kept for the device-silent alarm until they resume.
        self._parked: dict[int, _Session] = {}
        self._ready: list[_Ready] = []
        self._lock = threading.Lock()
        self._writer = _Writer(self.model_version) if db is not None else None
        self._stored_at = wall_clock()
        #: Counts of blocks, beats, batches, alarm changes, heart-rate updates, and beats the
        #: classifier failed on (kept as ``Q``, unclassifiable: :meth:`_classify_kept`).
        counts = ("blocks", "beats", "batches", "alarm_changes", "hr_updates", "unclassified")
        self.totals: dict[str, int] = dict.fromkeys(counts, 0)
        #: Seconds spent analysing blocks, classifying and storing, and the
        #: blocks' summed wait from arrival to analysis (storage and queues).
        self.busy: dict[str, float] = dict.fromkeys(("process_s", "classify_s", "store_s", "queued_s"), 0.0)

    # StreamProcessor -------------------------------------------------------------

    def process(self, block: StoredBlock) -> Sequence[LiveEvent]:
        """Display trace of the block, and the beats, rates and alarms that are due."""
        arrival = _arrival_time(block, self._clock)
        started = time.perf_counter()
        self.busy["queued_s"] += max(0.0, self._clock() - arrival)
        self.totals["blocks"] += 1
        events = list(self.display.process(block)) if self.display is not None else []
        with self._lock:
            state = self._session(block)
            state.note_data(block.time_of(block.end_seq).timestamp(), arrival, self._clock())
            if block.first_seq >= state.next_seq:  # late frames are stored, not analysed
                if block.first_seq > state.next_seq:
                    state.restart(block.first_seq)
                self._ready.extend(state.feed(block, arrival, self._clock()))
            self._flush_if_due(force=False)
            events.extend(state.take_outbox(self._clock()))
            self.busy["process_s"] += time.perf_counter() - started
        return events

    def vitals(self, reading: VitalsReading) -> Sequence[LiveEvent]:
        """Feed SpO2 and temperature to the patient's alarm engine."""
        with self._lock:
            state = self._sessions.get(reading.session_id)
            if state is None:
                return []
            v = reading.vitals
            state.last_data_t = max(state.last_data_t or -np.inf, reading.t.timestamp())
            state.last_arrival = self._clock()
            state.note_alarms(
                state.engine.on_vitals(
                    VitalsEvent(reading.t.timestamp(), spo2=v.spo2, pulse=v.pulse, temperature=v.temperature)
                ),
                self._clock(),
            )
            self._flush_if_due(force=False)
            return state.take_outbox(self._clock())

    def close_stream(self, session_id: int) -> Sequence[LiveEvent]:
        """Classify what the session still holds, store it, and forget the session."""
        with self._lock:
            state = self._sessions.pop(session_id, None)
            display = list(self.display.close_stream(session_id)) if self.display is not None else []
            if state is None:
                return display
            self._ready.extend(state.finish(self._clock()))
            self._flush_if_due(force=True, closing=state)
            if state.patient_id is None or state.replay:  # nobody watches it any more: its conditions end
                ended = state.engine.end_monitoring()
                if ended:
                    state.note_alarms(ended, self._clock())
                    self._flush_if_due(force=True, closing=state)
                return display + state.take_outbox(self._clock())
            events = display + state.take_outbox(self._clock())
            state.park()  # the patient's alarms go on: device silent, acknowledgements
            self._parked[session_id] = state
            return events

    def tick(self, now: float) -> Sequence[LiveEvent]:
        """Time-driven alarm changes at wall-clock time ``now``: silent devices, dashboard acknowledgements.

        Returns the events of every session that has any (their ``data``
        names the stream: ``patient_id``, ``session_id``, ``replay``),
        including those the next block would otherwise have carried.
        """
        with self._lock:
            clock = self._clock()
            sessions = [*self._sessions.values(), *self._parked.values()]
            for s in sessions:
                if s.last_data_t is not None and s.last_arrival is not None:
                    silence = max(0.0, now - s.last_arrival)
                    s.note_alarms(s.engine.tick(s.last_data_t + silence), clock)
            if self.db is not None:
                self._reconcile_acknowledgements(sessions, clock)
            self._flush_if_due(force=False, classify_now=True)  # a ready beat leaves with this tick
            pending = [s for s in self._parked.values() if s.has_pending()]
            pending += [s for s in self._sessions.values() if s.has_pending()]
            if pending:
                self._store(pending, clock, force=False)
            events: list[LiveEvent] = []
            for s in sessions:
                stream = {"patient_id": s.patient_id, "session_id": s.session_id, "replay": s.replay}
                events.extend(
                    LiveEvent(e.kind, {**e.data, **stream}, views=e.views) for e in s.take_outbox(clock)
                )
            return events

    def release(self) -> dict[int, list[LiveEvent]]:
        """Classify and publish what is due; the events of every connected session that has any.

        For a caller that can deliver any session's events at any time (a
        :class:`ShardedAnalysisProcessor` worker): the beats classified in a
        batch then leave at once, not with their sessions' next blocks. The
        server's own calls (:meth:`process`) return only their session's
        events, as the server publishes them to that session's patient.

        Returns
        -------
        dict
            Session id to its events, in order; sessions without events are left out.
        """
        with self._lock:
            self._flush_if_due(force=False)
            now = self._clock()
            out = {}
            for session_id, s in self._sessions.items():
                if s.outbox:
                    out[session_id] = s.take_outbox(now)
            return out

    def due_in(self) -> float | None:
        """Seconds until the oldest waiting beat or result is due (<= 0: overdue); None when nothing waits.

        A worker that is idle wakes up then and calls :meth:`release`, so
        that a beat does not wait for the next block of its session.
        """
        with self._lock:
            since = min(
                (s.pending_since for s in self._sessions.values() if s.has_pending()), default=float("inf")
            )
            if self._ready:
                since = min(since, self._ready[0].ready_at)
            if since == float("inf"):
                return None
            return since + self.config.batch_wait_s - self._clock()

    def _reconcile_acknowledgements(self, sessions: list[_Session], now: float) -> None:
        """Acknowledge in the engines the open alarms whose rows were acknowledged in the dashboard."""
        open_rows: dict[int, tuple[_Session, AlarmSnapshot]] = {}
        for s in sessions:
            for alarm in s.engine.open_alarms:
                row_id = s.alarm_ids.get(alarm.id)
                if row_id is not None:
                    open_rows[row_id] = (s, alarm)
        if not open_rows:
            return
        query = select(Alarm).where(Alarm.id.in_(list(open_rows)), Alarm.acknowledged_at.is_not(None))
        with self.db_session() as db_session:
            # Entities, not columns: loading an Alarm decrypts its note (storage.crypto).
            rows = [
                (a.id, a.acknowledged_by_id, a.acknowledged_at, a.note) for a in db_session.scalars(query)
            ]
        for row_id, user_id, acknowledged_at, note in rows:
            s, alarm = open_rows[row_id]
            if acknowledged_at is None:  # pragma: no cover - excluded by the query
                continue
            t = acknowledged_at.timestamp()
            if alarm.acknowledged_at is not None and t <= alarm.acknowledged_at:
                continue  # the engine knows this acknowledgement
            by = f"user:{user_id}" if user_id is not None else "dashboard"
            try:
                s.note_alarms(s.engine.acknowledge(alarm.id, by=by, t=t, note=note), now)
            except AlarmNotFoundError:  # pragma: no cover - open_alarms was read under the lock
                continue

    # Internals -----------------------------------------------------------------

    def _session(self, block: StoredBlock) -> _Session:
        state = self._sessions.get(block.session_id)
        if state is None:
            parked = self._parked.pop(block.session_id, None)
            if parked is None and block.patient_id is not None and not block.replay:
                parked = self._take_parked_patient(block.patient_id)
            state = _Session(block, self.classifier, self.config, self._limits(block.patient_id))
            if parked is not None:  # the stream resumes: its alarms carry on
                state.adopt(parked)
            self._sessions[block.session_id] = state
        return state

    def _take_parked_patient(self, patient_id: int) -> _Session | None:
        """The patient's ended streams, when the patient's device returns under a new session id.

        A device that restarts opens a new recording session; the patient's
        alarms carry on in it (the device-silent alarm resolves with its first
        data) instead of staying with a parked stream that would never resume.
        The latest of them is taken over, the others dropped.
        """
        ids = [sid for sid, s in self._parked.items() if s.patient_id == patient_id]
        ended = [self._parked.pop(sid) for sid in ids]
        return max(ended, key=lambda s: s.last_arrival or -np.inf) if ended else None

    def _limits(self, patient_id: int | None) -> AlarmLimits:
        """The patient's alarm limits (defaults where none are set or they are invalid)."""
        if self.db is None or patient_id is None:
            return AlarmLimits()
        with self.db.session() as session:
            patient = session.get(Patient, patient_id)
            overrides = dict(patient.alarm_limits or {}) if patient is not None else {}
        try:
            return AlarmLimits.from_mapping(overrides)
        except (TypeError, ValueError) as exc:
            logger.warning("patient %d has invalid alarm limits (%s); using the defaults", patient_id, exc)
            return AlarmLimits()

    def _flush_if_due(
        self, *, force: bool, closing: _Session | None = None, classify_now: bool = False
    ) -> None:
        """Classify the waiting beats and store everything pending, when the batch is due.

        Due when forced (or ``classify_now`` and beats wait), or when a
        waiting beat or a pending result has waited ``batch_wait_s``;
        ``closing`` is a session already forgotten.
        """
        now = self._clock()
        wait = self.config.batch_wait_s
        pending = [s for s in [*self._sessions.values(), *([closing] if closing else [])] if s.has_pending()]
        due = force or bool(self._ready and (classify_now or now - self._ready[0].ready_at >= wait))
        if not due and not any(now - s.pending_since >= wait for s in pending):
            return
        ready, self._ready = self._ready, []
        if ready:
            started = time.perf_counter()
            self.totals["batches"] += 1
            self.totals["beats"] += len(ready)
            for item, out in zip(ready, self._classify_kept(ready), strict=True):
                item.session.classified(item, out, now)
            for s in {id(r.session): r.session for r in ready}.values():
                s.progress(now)  # the bound moves on to the next beat not yet classified
            self.busy["classify_s"] += time.perf_counter() - started
        sessions = {id(s): s for s in [*pending, *(r.session for r in ready)]}
        self._store(list(sessions.values()), now, force=force)

    def _classify_kept(self, ready: list[_Ready]) -> list[_Output]:
        """:func:`_classify`, losing no beat when it fails.

        A failed batch is classified again session by session, from the
        sessions' state before the batch, so one stream's bad beat costs
        no other stream anything; the beats of a session that still fails
        are kept as ``Q`` (unclassifiable, :func:`_unclassified`): stored,
        shown and timed like any beat, with no abnormal or early-alarm
        probability, and the session's context goes on as if they had not
        been seen. Failures are logged and counted in
        ``totals["unclassified"]``.
        """
        sessions = _by_session(ready)
        saved = {id(s): s.analysis_state() for s, _ in sessions}
        try:
            return _classify(self.classifier, ready)
        except Exception:  # a classifier bug must not lose the beats; it is logged and counted
            logger.exception(
                "classifying a batch of %d beats failed; classifying each stream apart", len(ready)
            )
        outputs: dict[int, _Output] = {}
        for session, items in sessions:
            session.restore_analysis_state(saved[id(session)])
            try:
                outs = _classify(self.classifier, items)
            except Exception:  # as above
                logger.exception(
                    "classifying %d beats of session %d failed; they are kept as Q (unclassifiable)",
                    len(items),
                    session.session_id,
                )
                session.restore_analysis_state(saved[id(session)])
                outs = [_unclassified(self.classifier.classes)] * len(items)
                self.totals["unclassified"] += len(items)
            outputs.update(zip(map(id, items), outs, strict=True))
        return [outputs[id(item)] for item in ready]

    def _store(self, sessions: list[_Session], now: float, *, force: bool) -> None:
        """Queue the sessions' results for publishing; write alarms now, beats and rates each second.

        Alarm changes are written at once (their rows' ids go out with
        them); beats and heart rates are written together every
        ``store_every_s`` (and when a stream closes), which keeps the
        writes that compete with sample storage for the database to about
        one transaction a second.
        """
        started = time.perf_counter()
        if self._writer is not None and any(s.pending_alarms for s in sessions):
            with self.db_session() as db_session:
                for s in sessions:
                    s.publish_pending(self._writer, db_session)
        else:
            for s in sessions:
                s.publish_pending(self._writer, None)
        if self._writer is not None and (force or now - self._stored_at >= self.config.store_every_s):
            with self.db_session() as db_session:
                self._writer.write(db_session)
            self._stored_at = now
        for s in sessions:
            self.totals["alarm_changes"] += s.stats_alarm_changes
            self.totals["hr_updates"] += s.stats_hr
            s.stats_alarm_changes = s.stats_hr = 0
        self.busy["store_s"] += time.perf_counter() - started

    @property
    def open_sessions(self) -> dict[str, int]:
        """Per-session state held: ``connected`` streams, ``parked`` ones (ended, kept for the
        device-silent alarm), ``waiting`` beats and display ``traces`` (for monitoring; all but
        ``parked`` return to 0 once every stream has closed).
        """
        with self._lock:
            return {
                "connected": len(self._sessions),
                "parked": len(self._parked),
                "waiting": len(self._ready),
                "traces": self.display.n_streams if self.display is not None else 0,
            }

    def db_session(self) -> contextlib.AbstractContextManager[DbSession]:
        """A transaction on the processor's database."""
        if self.db is None:
            raise RuntimeError("this processor stores nothing (`db` is None)")
        return self.db.session()


class ShardedAnalysisProcessor:
    """:class:`AnalysisProcessor` in worker processes, sessions spread over them.

    The server's process keeps the display trace (a
    :class:`~ingest.processing.DisplayProcessor`) and hands every stored
    block and vitals reading to the worker that owns its patient
    (``patient_id % workers``; ``session_id % workers`` for replays and
    streams without a patient), through a pipe, so that a patient's new
    session meets the alarms of the ended one. Each worker runs an
    :class:`AnalysisProcessor` with its own database connection, batches
    beats across its sessions, and sends the events back as they are
    ready: a session's own events with the reply to its block, and every
    session's beats as soon as their batch is classified
    (:meth:`AnalysisProcessor.release`; an idle worker wakes up for a batch
    that is due). A call returns the events that have come back for its
    session, so a beat leaves with its session's next block after it was
    classified (about a frame after the block that made it ready, rather
    than two). The analysis then has its own
    interpreter and core instead of sharing the server's GIL with the
    event loop and the storage thread.

    Parameters
    ----------
    database_url : str, optional
        Database of the workers (a file or server database; not an
        in-memory SQLite one); ``None`` stores nothing.
    checkpoint : path, optional
        Beat classifier checkpoint; default the shipped weights.
    workers : int
        Worker processes.
    config : PipelineConfig, optional
        As for :class:`AnalysisProcessor`.
    display : DisplayProcessor, optional
        The display trace, made here.
    reply_timeout_s : float
        Longest wait for a worker's last events of a closing stream.
    stale_s : float
        Events of an open stream that have waited this long for its next
        block (a device gone quiet) leave with the next tick instead.

    Examples
    --------
    >>> proc = ShardedAnalysisProcessor(db.url_with_password, workers=1)  # doctest: +SKIP
    >>> server = IngestServer(db, live_secret=secret, processor=proc)  # doctest: +SKIP
    >>> proc.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        workers: int = 1,
        config: PipelineConfig | None = None,
        display: DisplayProcessor | None = None,
        reply_timeout_s: float = 30.0,
        stale_s: float = 0.5,
    ) -> None:
        if workers < 1:
            raise ValueError(f"`workers` must be at least 1, got {workers}")
        if not stale_s > 0:
            raise ValueError(f"`stale_s` must be positive, got {stale_s}")
        self.display = display or DisplayProcessor()
        self.reply_timeout_s = reply_timeout_s
        self.stale_s = stale_s
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._requests: list[Connection] = []
        self._workers: list[BaseProcess] = []
        self._send_locks = [threading.Lock() for _ in range(workers)]
        self._replies = threading.Condition()
        self._outbox: dict[int, list[LiveEvent]] = {}
        self._closed: dict[int, list[LiveEvent]] = {}
        self._ticked: list[LiveEvent] = []
        #: Open streams (their ids as tick events carry them): their beats leave with their next block.
        self._open: dict[int, dict[str, Any]] = {}
        #: When each session's waiting events began to wait (time.monotonic()).
        self._waiting_since: dict[int, float] = {}
        self._errors: list[str] = []
        ckpt = None if checkpoint is None else str(checkpoint)
        for i in range(workers):
            # One-way pipes, and a thread here that always reads the replies: a worker
            # never blocks on a full reply pipe while this side blocks on a full request pipe.
            request_out, request_in = context.Pipe(duplex=False)
            reply_out, reply_in = context.Pipe(duplex=False)
            worker = context.Process(
                target=_worker_main,
                args=(request_out, reply_in, database_url, ckpt, config),
                name=f"ingest-analysis-{i}",
                daemon=True,
            )
            worker.start()
            request_out.close()
            reply_in.close()
            self._requests.append(request_in)
            self._workers.append(worker)
            threading.Thread(
                target=self._read_replies, args=(reply_out,), name=f"ingest-analysis-replies-{i}", daemon=True
            ).start()

    def process(self, block: StoredBlock) -> Sequence[LiveEvent]:
        """Display trace here; the block goes to its worker; the session's events that came back."""
        events = list(self.display.process(block))
        with self._replies:
            stream = {"patient_id": block.patient_id, "session_id": block.session_id, "replay": block.replay}
            self._open[block.session_id] = stream
        return events + self._exchange(block.session_id, ("process", block))

    def vitals(self, reading: VitalsReading) -> Sequence[LiveEvent]:
        """The reading goes to the session's worker; the session's events that came back."""
        with self._replies:
            stream = {
                "patient_id": reading.patient_id,
                "session_id": reading.session_id,
                "replay": reading.replay,
            }
            self._open[reading.session_id] = stream
        return self._exchange(reading.session_id, ("vitals", reading))

    def close_stream(self, session_id: int) -> Sequence[LiveEvent]:
        """Wait for the worker to finish the session; its last events."""
        events = list(self.display.close_stream(session_id))
        self._send(self._shard(session_id), ("close", session_id))
        with self._replies:
            if not self._replies.wait_for(lambda: session_id in self._closed, self.reply_timeout_s):
                raise TimeoutError(f"the analysis worker did not close session {session_id} in time")
            self._open.pop(session_id, None)
            return events + self._take(session_id) + self._closed.pop(session_id)

    def tick(self, now: float) -> Sequence[LiveEvent]:
        """Every worker ticks (asynchronously); the tick events that have come back so far.

        A tick's events leave with a later call: the beats, rates and
        quality reports of an open stream with its next block (a fraction
        of a second), alarm changes and the events of ended streams with the
        next tick, about a second later. Events of an open stream that have
        waited longer than ``stale_s`` for its next block (the device went
        quiet) leave with this tick.
        """
        for shard in range(len(self._requests)):
            self._send(shard, ("tick", now))
        with self._replies:
            if self._errors:
                raise RuntimeError(f"an analysis worker failed: {self._errors.pop(0)}")
            events, self._ticked = self._ticked, []
            stale = time.monotonic() - self.stale_s
            for session_id in [
                sid for sid, t in self._waiting_since.items() if t <= stale and sid in self._open
            ]:
                stream = self._open[session_id]
                events.extend(
                    LiveEvent(e.kind, {**e.data, **stream}, views=e.views) for e in self._take(session_id)
                )
            return events

    @property
    def open_sessions(self) -> dict[str, int]:
        """Per-session state held in this process: ``open`` streams, sessions whose events wait
        here (``outboxes``, ``closing``) and display ``traces``; 0 once every stream has closed.
        """
        with self._replies:
            return {
                "open": len(self._open),
                "outboxes": len(self._outbox) + len(self._waiting_since),
                "closing": len(self._closed),
                "traces": self.display.n_streams,
            }

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers (for monitoring)."""
        return [w.pid for w in self._workers if w.pid is not None]

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the workers (what they hold is lost: close the streams first)."""
        for request in self._requests:
            with contextlib.suppress(OSError):
                request.send(None)
        for worker in self._workers:
            worker.join(timeout_s)
            if worker.is_alive():
                worker.kill()
        for request in self._requests:
            request.close()

    def _shard(self, session_id: int) -> int:
        """The worker of a session: one per patient, so a patient's new session finds the ended ones."""
        stream = self._open.get(session_id, {})
        patient = stream.get("patient_id")
        key = patient if patient is not None and not stream.get("replay") else session_id
        return int(key) % len(self._requests)

    def _send(self, shard: int, message: tuple[str, Any]) -> None:
        with self._send_locks[shard]:
            self._requests[shard].send(message)

    def _exchange(self, session_id: int, message: tuple[str, Any]) -> list[LiveEvent]:
        self._send(self._shard(session_id), message)
        with self._replies:
            if self._errors:
                raise RuntimeError(f"an analysis worker failed: {self._errors.pop(0)}")
            return self._take(session_id)

    def _queue(self, session_id: int, events: list[LiveEvent]) -> None:
        """Keep a session's events for its next call (under ``_replies``)."""
        if events:
            self._outbox.setdefault(session_id, []).extend(events)
            self._waiting_since.setdefault(session_id, time.monotonic())

    def _take(self, session_id: int) -> list[LiveEvent]:
        """A session's waiting events (under ``_replies``)."""
        self._waiting_since.pop(session_id, None)
        return self._outbox.pop(session_id, [])

    def _read_replies(self, replies: Connection) -> None:
        """Reader thread: sort a worker's replies into the sessions' outboxes until it ends."""
        with contextlib.suppress(EOFError, OSError):  # the worker ended
            while True:
                kind, session_id, payload = replies.recv()
                with self._replies:
                    if kind == "error":
                        self._errors.append(str(payload[0][1]))
                        continue
                    events = [LiveEvent(k, d, views=v) for k, d, v in payload]
                    if kind == "ticked":
                        for event in events:
                            sid = event.data.get("session_id")
                            if event.kind != "alarm" and isinstance(sid, int) and sid in self._open:
                                self._queue(sid, [event])  # a beat: with the stream's next block
                            else:
                                self._ticked.append(event)
                    elif kind == "closed":
                        self._closed[session_id] = events
                    else:
                        self._queue(session_id, events)
                    self._replies.notify_all()
        replies.close()


@dataclass(frozen=True)
class OfflineBeats:
    """Beats of a whole signal classified offline.

    Attributes
    ----------
    r_peaks : ndarray of int64
        Sample indices of the detected R peaks.
    labels : list of str
        Class of each beat.
    class_probs : ndarray, shape (N, C)
        Class probabilities.
    """

    r_peaks: NDArray[np.int64]
    labels: list[str]
    class_probs: NDArray[np.float32]


@dataclass(frozen=True)
class Agreement:
    """Live (streamed) against offline classification of the same signal.

    Attributes
    ----------
    offline, live : int
        Beats found by each.
    matched : int
        Beats at the same R-peak sample in both.
    same_class : int
        Matched beats with the same class.
    """

    offline: int
    live: int
    matched: int
    same_class: int

    @property
    def fraction(self) -> float:
        """Beats found by both with the same class, over the beats of either."""
        return self.same_class / max(self.offline, self.live, 1)


def classify_offline(
    samples_mv: NDArray[np.floating], fs: float, lead_names: Sequence[str], classifier: BeatClassifier
) -> OfflineBeats:
    """Detect and classify every beat of a whole signal at once (the reference for the live path).

    Parameters
    ----------
    samples_mv : ndarray, shape (n_samples, n_leads)
        The signal in mV, as the device sent it.
    fs : float
        Sampling rate in Hz.
    lead_names : sequence of str
        Lead names (MLII is put first, as in training).
    classifier : BeatClassifier

    Returns
    -------
    OfflineBeats
        :func:`sigproc.peaks.detect_r_peaks` on the raw leads, windows of
        the checkpoint's causal filter, :func:`sigproc.beats.rr_features`,
        :meth:`BeatClassifier.predict`.
    """
    order = _lead_order(lead_names, classifier.n_leads)
    x = np.asarray(samples_mv, dtype=np.float64)[:, order]
    pre = classifier.preprocess
    filtered = StreamingFilter.from_spec(pre.filter_spec(), fs, n_leads=x.shape[1]).process(x)
    peaks = detect_r_peaks(x, fs)
    bw = beat_windows(filtered, peaks, fs, window_s=pre.window_s, pre_fraction=pre.pre_fraction)
    rr = rr_features(peaks, fs, local_beats=pre.rr_local_beats, mean_beats=pre.rr_mean_beats)
    pred = classifier.predict(bw, rr, fs=fs)
    return OfflineBeats(peaks, pred.labels, pred.class_probs)


def replay_offline(
    signal: ReplaySignal,
    classifier: BeatClassifier,
    *,
    frame_s: float = 0.25,
    config: PipelineConfig | None = None,
) -> list[dict[str, Any]]:
    """Run :class:`AnalysisProcessor` on a replay signal cut into frames as the device sends them.

    Returns the ``beat`` events' data in order (nothing is stored).
    """
    proc = AnalysisProcessor(None, classifier, config=config or PipelineConfig(batch_wait_s=0.0))
    n = max(1, round(frame_s * signal.fs))
    started = datetime(2000, 1, 1, tzinfo=UTC)
    events: list[LiveEvent] = []
    for first in range(0, signal.n_samples, n):
        block = signal.stored_block(first, n, session_id=1, patient_id=None, started_at=started, replay=True)
        events.extend(proc.process(block))
    events.extend(proc.close_stream(1))
    return [dict(e.data) for e in events if e.kind == "beat"]


def live_agreement(signal: ReplaySignal, classifier: BeatClassifier, *, frame_s: float = 0.25) -> Agreement:
    """Compare the streamed classification of ``signal`` with :func:`classify_offline`.

    Examples
    --------
    >>> sig = load_replay_signal("208", seconds=120)  # doctest: +SKIP
    >>> live_agreement(sig, BeatClassifier.load()).fraction >= 0.99  # doctest: +SKIP
    True
    """
    mv = (signal.samples.astype(np.float64) - signal.baseline) / signal.gain
    offline = classify_offline(mv, signal.fs, signal.leads, classifier)
    live = {int(b["seq"]): str(b["label"]) for b in replay_offline(signal, classifier, frame_s=frame_s)}
    ref = dict(zip(offline.r_peaks.tolist(), offline.labels, strict=True))
    matched = set(ref) & set(live)
    same = sum(ref[p] == live[p] for p in matched)
    return Agreement(len(ref), len(live), len(matched), same)


# Internals ---------------------------------------------------------------------------


def _worker_main(
    requests: Connection,
    replies: Connection,
    database_url: str | None,
    checkpoint: str | None,
    config: PipelineConfig | None,
) -> None:
    """A :class:`ShardedAnalysisProcessor` worker: run an :class:`AnalysisProcessor` on what arrives."""
    db: Database | None = None
    if database_url is not None:
        db = Database()
        db.init(database_url)
    proc = AnalysisProcessor(db, BeatClassifier.load(checkpoint, num_threads=1), config=config, trace=False)
    try:
        with contextlib.suppress(EOFError, KeyboardInterrupt):  # the parent went away: just end
            running, released = True, True
            while running:
                wait = proc.due_in()
                # Idle: the beats that are due go out without waiting for a block (after a
                # failure, not before a second has passed: no busy loop on a broken database).
                if wait is not None and not requests.poll(max(wait, 0.0 if released else 1.0)):
                    released = _send_released(proc, replies)
                    continue
                messages = [requests.recv()]
                while requests.poll() and len(messages) < _MAX_DRAIN:
                    messages.append(requests.recv())
                running = None not in messages
                for kind, item in _coalesce(messages[: messages.index(None)] if not running else messages):
                    replies.send(_handle(proc, kind, item))
                released = _send_released(proc, replies)
    finally:
        if db is not None:
            db.dispose()


#: Most messages a worker takes from its pipe at once.
_MAX_DRAIN = 256


def _coalesce(messages: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Join each session's consecutive blocks into one, keeping every session's order.

    A worker that has fallen behind then makes fewer, larger calls: the
    fixed cost of a call (filters, detector, quality bookkeeping) is paid
    once per run of blocks. The joined block keeps the first block's
    arrival time, so the latencies measured stay on the safe side.
    """
    out: list[tuple[str, Any]] = []
    open_run: dict[int, int] = {}  # session -> index in ``out`` of its block that may grow
    for kind, item in messages:
        if kind == "tick":
            out.append((kind, item))
            continue
        if kind != "process":
            open_run.pop(item if kind == "close" else item.session_id, None)
            out.append((kind, item))
            continue
        i = open_run.get(item.session_id, -1)
        last = out[i][1] if i >= 0 else None
        if last is not None and last.end_seq == item.first_seq and item.kind is SeqKind.NEW:
            out[i] = (kind, dataclasses.replace(last, samples=np.concatenate([last.samples, item.samples])))
        else:
            open_run[item.session_id] = len(out)
            out.append((kind, item))
    return out


def _send_released(proc: AnalysisProcessor, replies: Connection) -> bool:
    """Send every session's events that a batch produced (see :meth:`AnalysisProcessor.release`).

    Returns whether it worked (an error goes to the parent, which logs it).
    """
    try:
        released = proc.release()
    except (ValueError, RuntimeError, SQLAlchemyError) as exc:
        replies.send(("error", -1, [("error", repr(exc), None)]))
        return False
    for session_id, events in released.items():
        replies.send(("events", session_id, [(e.kind, dict(e.data), e.views) for e in events]))
    return True


def _handle(proc: AnalysisProcessor, kind: str, item: Any) -> tuple[str, int, list[tuple[str, Any, Any]]]:
    """One call on the worker's processor; the reply (an error goes to the parent, which logs it)."""
    try:
        return _call(proc, kind, item)
    except (ValueError, RuntimeError, SQLAlchemyError) as exc:
        return "error", -1, [("error", repr(exc), None)]


def _call(proc: AnalysisProcessor, kind: str, item: Any) -> tuple[str, int, list[tuple[str, Any, Any]]]:
    if kind == "process":
        events, session_id, reply = proc.process(item), item.session_id, "events"
    elif kind == "vitals":
        events, session_id, reply = proc.vitals(item), item.session_id, "events"
    elif kind == "tick":
        events, session_id, reply = proc.tick(item), -1, "ticked"
    else:
        events, session_id, reply = proc.close_stream(item), item, "closed"
    return reply, session_id, [(e.kind, dict(e.data), e.views) for e in events]


def _arrival_time(block: StoredBlock, clock: Callable[[], float]) -> float:
    """When the block reached the server (``received_at``; the clock where unknown)."""
    return block.received_at.timestamp() if block.received_at is not None else clock()


def _lead_order(lead_names: Sequence[str], max_leads: int) -> list[int]:
    """Lead columns for the model: MLII first (record 114 has it second), at most ``max_leads``."""
    order = list(range(len(lead_names)))
    if "MLII" in lead_names:
        i = list(lead_names).index("MLII")
        order = [i] + [j for j in order if j != i]
    return order[:max_leads]


class _Buffer:
    """The latest samples of a stream, addressed by absolute sample index."""

    def __init__(self, n_leads: int, start: int) -> None:
        self.data = np.zeros((0, n_leads))
        self.start = start

    @property
    def end(self) -> int:
        return self.start + self.data.shape[0]

    def append(self, x: NDArray[np.float64]) -> None:
        self.data = np.concatenate([self.data, x]) if self.data.size else x

    def trim(self, keep_from: int) -> None:
        cut = keep_from - self.start
        if cut > 0:
            self.data = self.data[cut:]
            self.start = keep_from

    def window(self, lo: int, hi: int) -> NDArray[np.float64]:
        return self.data[max(lo - self.start, 0) : max(hi - self.start, 0)]


@dataclass
class _Held:
    """A detected beat waiting for its next R peak and the end of its window."""

    peak: int
    causal: tuple[float, float, float, float]
    arrival: float
    rr: NDArray[np.float64] | None = None


@dataclass
class _Ready:
    """A beat ready for the network."""

    session: _Session
    peak: int
    window: NDArray[np.float64]  # (L, W) at the device's rate
    rr: NDArray[np.float64]  # (7,)
    arrival: float
    ready_at: float


@dataclass(frozen=True)
class _Output:
    class_probs: NDArray[np.float32]  # (C,)
    abnormal: float | None  # None: not classified (:func:`_unclassified`)
    early: float | None  # probability that one of the next H beats is not N
    af: bool = False  # in atrial fibrillation by the checkpoint's AF gate (S folded into N)


class _Session:
    """Analysis state of one recording session."""

    def __init__(
        self, block: StoredBlock, classifier: BeatClassifier, config: PipelineConfig, limits: AlarmLimits
    ) -> None:
        self.session_id = block.session_id
        self.patient_id = block.patient_id
        self.replay = block.replay
        #: Sample-clock time of the latest data, and the wall-clock time it arrived.
        self.last_data_t: float | None = None
        self.last_arrival: float | None = None
        self.t0 = block.started_at.timestamp()
        self.started_at = block.started_at
        self.fs = block.fs
        self.order = _lead_order(block.lead_names, classifier.n_leads)
        self.classifier = classifier
        self.config = config
        pre = classifier.preprocess
        self.width = round(pre.window_s * self.fs)
        self.pre = round(self.width * pre.pre_fraction)
        self.use_post_rr = bool(classifier.checkpoint.model_config.use_post_rr)
        self.engine = AlarmEngine(limits)
        self.context: deque[torch.Tensor] = deque(maxlen=classifier.checkpoint.model_config.seq_len - 1)
        detector = classifier.af_detector
        self.af: AFMonitor | None = None if detector is None else AFMonitor(detector)
        self.outbox: list[dict[str, Any]] = []
        self.pending_beats: list[tuple[_Ready, _Output]] = []
        self.pending_alarms: list[AlarmChange] = []
        self.pending_hr: list[tuple[int, float]] = []
        self.pending_since = float("inf")
        self.alarm_ids: dict[int, int] = {}
        self.stats_alarm_changes = 0
        self.stats_hr = 0
        self.technical: TechnicalKind | None = None
        self.hr_rr: deque[float] = deque(maxlen=config.hr_intervals)
        self.hr_method = (
            f"60 / mean of the last {config.hr_intervals} RR intervals between good-quality beats, "
            f"updated every {config.hr_update_s:g} s"
        )
        self.last_good_peak: int | None = None
        #: Peaks handed to the network and not yet back, in order, with the wall-clock time they left.
        self.in_flight: deque[tuple[int, float]] = deque()
        self.restart(block.first_seq)

    def analysis_state(self) -> tuple[tuple[torch.Tensor, ...], AFMonitor | None]:
        """What classifying a beat changes: the network's context and the AF monitor."""
        return tuple(self.context), None if self.af is None else self.af.copy()

    def restore_analysis_state(self, state: tuple[tuple[torch.Tensor, ...], AFMonitor | None]) -> None:
        """Back to :meth:`analysis_state` (a classification that failed half-way)."""
        context, af = state
        self.context.clear()
        self.context.extend(context)
        self.af = None if af is None else af.copy()

    # Stream ----------------------------------------------------------------------

    def restart(self, seq: int) -> None:
        """Start the analysis afresh at sample ``seq`` (stream start, or after a gap)."""
        n = len(self.order)
        pre = self.classifier.preprocess
        self.origin = self.next_seq = seq
        self.filter = StreamingFilter.from_spec(pre.filter_spec(), self.fs, n_leads=n)
        self.detector = StreamingPeakDetector(self.fs, n)
        self.rr = StreamingRRFeatures(self.fs, local_beats=pre.rr_local_beats, mean_beats=pre.rr_mean_beats)
        self.filtered = _Buffer(n, seq)
        self.raw = _Buffer(n, seq)
        self.held: deque[_Held] = deque()
        self.arrivals: deque[tuple[int, float]] = deque()
        self.context.clear()
        if self.af is not None:
            self.af.reset()
        self.hr_rr.clear()
        self.last_good_peak = None
        self.quality_ok = False  # unknown until the first window is judged
        self.next_quality = seq + round(self.config.quality.window_s * self.fs)
        self.next_hr = seq + round(self.config.hr_update_s * self.fs)

    def note_data(self, t: float, arrival: float, now: float) -> None:
        """Samples up to ``t`` (sample clock) arrived at ``arrival``: the device is not silent.

        The engine hears of it at once (its silence is measured from ``t``;
        an open device-silent alarm resolves).
        """
        self.last_data_t = t if self.last_data_t is None else max(t, self.last_data_t)
        self.last_arrival = arrival if self.last_arrival is None else max(arrival, self.last_arrival)
        self.note_alarms(self.engine.on_data(t), now)

    def adopt(self, parked: _Session) -> None:
        """Carry on the alarms of an ended stream of this session (it resumes)."""
        self.engine = parked.engine
        self.alarm_ids = parked.alarm_ids
        self.last_data_t, self.last_arrival = parked.last_data_t, parked.last_arrival

    def park(self) -> None:
        """The stream ended: drop the signal state, keep what the alarms need."""
        self.restart(self.next_seq)
        self.outbox, self.pending_beats, self.pending_hr = [], [], []

    def t_of(self, seq: int) -> float:
        """Epoch seconds of sample ``seq``."""
        return self.t0 + seq / self.fs

    def feed(self, block: StoredBlock, arrival: float, now: float) -> list[_Ready]:
        """Analyse the next block; the beats that became ready for the network."""
        x = block.physical()[:, self.order]  # (n, L) mV
        self.arrivals.append((block.end_seq, arrival))
        self.filtered.append(self.filter.process(x))
        self.raw.append(x)
        self.next_seq = block.end_seq
        for peak in (self.detector.process(x) + self.origin).tolist():
            self._detected(int(peak))
        self._judge_quality(now)
        self.progress(now)
        self._update_hr(now)
        ready = self._take_ready(now, final=False)
        self._trim()
        return ready

    def finish(self, now: float) -> list[_Ready]:
        """End of the connection: the last peaks, classified with what is known."""
        for peak in (self.detector.flush_segment() + self.origin).tolist():
            self._detected(int(peak))
        return self._take_ready(now, final=True)

    def _detected(self, peak: int) -> None:
        causal = self.rr.push(peak)
        if self.held and self.held[-1].rr is None:
            last = self.held[-1]
            last.rr = StreamingRRFeatures.complete(last.causal, causal[0])
        held = _Held(peak, causal, self._arrival_of(peak))
        if not self.use_post_rr:
            held.rr = StreamingRRFeatures.complete(causal, causal[0])
        self.held.append(held)

    def _arrival_of(self, peak: int) -> float:
        for end, arrival in self.arrivals:
            if peak < end:
                return arrival
        return self.arrivals[-1][1]

    def _take_ready(self, now: float, *, final: bool) -> list[_Ready]:
        """Held beats whose RR features and window are complete (all of them when ``final``)."""
        timeout = self.held_back()
        out: list[_Ready] = []
        while self.held:
            h = self.held[0]
            if h.rr is None and (final or self.next_seq - h.peak >= timeout):
                h.rr = StreamingRRFeatures.complete(h.causal, h.causal[0])
            if h.rr is None or not (final or h.peak - self.pre + self.width <= self.filtered.end):
                break
            self.held.popleft()
            self.in_flight.append((h.peak, now))
            out.append(_Ready(self, h.peak, self._window(h.peak), h.rr, h.arrival, now))
        return out

    def _window(self, peak: int) -> NDArray[np.float64]:
        """The beat's window, edge-padded where it leaves the signal (as :func:`beat_windows` does)."""
        lo = max(peak - self.pre, self.filtered.start)
        seg = self.filtered.window(lo, peak - self.pre + self.width)
        # beat_windows' cut, without its argument checks (a tenth of a millisecond a beat).
        first = peak - self.pre - lo
        idx = np.clip(np.arange(first, first + self.width), 0, len(seg) - 1)
        return np.ascontiguousarray(seg[idx].T)  # (L, W)

    def held_back(self) -> int:
        """Samples by which classification may trail the stream (hold time out)."""
        return round(self.config.hold_timeout_s * self.fs)

    def _trim(self) -> None:
        keep = self.next_seq - round(self.config.buffer_s * self.fs)
        if self.held:
            keep = min(keep, self.held[0].peak - self.pre)
        self.filtered.trim(keep)
        self.raw.trim(self.next_seq - round(self.config.quality.window_s * self.fs))
        while len(self.arrivals) > 1 and self.arrivals[0][0] <= keep:
            self.arrivals.popleft()

    # Quality, progress, heart rate ---------------------------------------------------

    def _judge_quality(self, now: float) -> None:
        """Judge the last quality window every hop; technical conditions start and end here."""
        win = round(self.config.quality.window_s * self.fs)
        while self.next_seq >= self.next_quality:
            end = self.next_quality
            self.next_quality += round(self.config.quality_hop_s * self.fs)
            report = assess_quality(self.raw.window(end - win, end), self.fs, self.config.quality)
            self.quality_ok = bool(report.readable()[0])
            kind = None if self.quality_ok else _technical_kind(report.flags[0])
            self.outbox.append(
                {
                    "type": "quality",
                    "seq": end - win,
                    "t": datetime.fromtimestamp(self.t_of(end - win), UTC).isoformat(),
                    "window_s": self.config.quality.window_s,
                    "sqi": np.round(report.sqi[0], 3).tolist(),
                    "readable": self.quality_ok,
                    "condition": None if kind is None else kind.value,
                }
            )
            if kind != self.technical:
                t = self.t_of(end)
                if self.technical is not None:
                    self.note_alarms(self.engine.on_technical(TechnicalEvent(t, self.technical, False)), now)
                if kind is not None:
                    self.note_alarms(self.engine.on_technical(TechnicalEvent(t, kind, True)), now)
                self.technical = kind

    def progress(self, now: float) -> None:
        """Tell the engine how far the detector has surely looked (its reporting bound).

        The engine hears of a beat only once the network has classified it,
        so the bound stops at the first beat found but not yet classified
        (held for its next RR interval, or waiting in the batch): otherwise
        a burst of samples (a device sending its backlog after a
        reconnection) would run the bound seconds past beats still in the
        queue and raise a false asystole.
        """
        analysed = self.next_seq - round(self.detector.max_delay_s * self.fs)
        if self.held:
            analysed = min(analysed, self.held[0].peak)
        while self.in_flight and now - self.in_flight[0][1] > _IN_FLIGHT_TIMEOUT_S:
            self.in_flight.popleft()  # lost (a failed batch): it must not hold the asystole check back
        if self.in_flight:
            analysed = min(analysed, self.in_flight[0][0])
        if analysed > self.origin:
            self.note_alarms(self.engine.on_progress(self.t_of(analysed)), now)

    def _update_hr(self, now: float) -> None:
        """Every ``hr_update_s``: 60 / mean of the last RR intervals of good-quality beats."""
        if self.next_seq < self.next_hr:
            return
        step = round(self.config.hr_update_s * self.fs)
        self.next_hr += step * ((self.next_seq - self.next_hr) // step + 1)
        stale = round(self.engine.limits.asystole_s * self.fs) + self.held_back()
        if self.last_good_peak is None or self.next_seq - self.last_good_peak > stale:
            self.hr_rr.clear()  # no beat for a while: no rate rather than an old one
        if len(self.hr_rr) >= self.config.hr_min_intervals:
            self.pending_hr.append((self.next_seq, 60.0 / float(np.mean(self.hr_rr))))
            self.pending_since = min(self.pending_since, now)

    # Results ---------------------------------------------------------------------------

    def classified(self, item: _Ready, out: _Output, now: float) -> None:
        """A beat came back from the network: heart rate, alarm rules, queued for storage."""
        while self.in_flight and self.in_flight[0][0] <= item.peak:
            self.in_flight.popleft()
        label = self.classifier.classes[int(np.argmax(out.class_probs))]
        ok = self.quality_ok and self.technical is None
        if ok and self.last_good_peak is not None:
            self.hr_rr.append((item.peak - self.last_good_peak) / self.fs)
        elif not ok:
            self.hr_rr.clear()  # no rate across an untrustworthy stretch
        self.last_good_peak = item.peak if ok else None
        event = BeatEvent(
            self.t_of(item.peak),
            label,
            dict(zip(self.classifier.classes, out.class_probs.tolist(), strict=True)),
            early_alarm=out.early,
            quality_ok=ok,
            af=out.af,
        )
        self.pending_beats.append((item, out))
        self.pending_since = min(self.pending_since, now)
        self.note_alarms(self.engine.on_beat(event), now)

    def note_alarms(self, changes: Iterable[AlarmChange], now: float) -> None:
        """Queue alarm changes for storage and publishing."""
        changes = list(changes)
        if changes:
            self.pending_alarms.extend(changes)
            self.pending_since = min(self.pending_since, now)

    def has_pending(self) -> bool:
        return bool(self.pending_beats or self.pending_alarms or self.pending_hr)

    def publish_pending(self, writer: _Writer | None, db_session: DbSession | None) -> None:
        """Queue the live messages of everything pending, and its rows in ``writer``.

        Alarm changes are written in ``db_session`` (when given).
        """
        for item, out in self.pending_beats:
            label = self.classifier.classes[int(np.argmax(out.class_probs))]
            message = self._beat_message(item, out, label)
            if writer is not None:
                writer.beat(self, item.peak, label, out)
            self.outbox.append(message)
        for seq, hr in self.pending_hr:
            t = datetime.fromtimestamp(self.t_of(seq), UTC)
            if writer is not None:
                writer.heart_rate(self, t, hr)
            self.outbox.append(
                {"type": "heart_rate", "t": t.isoformat(), "hr_bpm": round(hr, 1), "method": self.hr_method}
            )
        for change in self.pending_alarms:
            db_id = writer.alarm(db_session, self, change) if writer is not None and db_session else None
            self.outbox.append(_alarm_message(change, db_id))
        self.stats_alarm_changes += len(self.pending_alarms)
        self.stats_hr += len(self.pending_hr)
        self.pending_beats, self.pending_alarms, self.pending_hr = [], [], []
        self.pending_since = float("inf")

    def _beat_message(self, item: _Ready, out: _Output, label: str) -> dict[str, Any]:
        return {
            "type": "beat",
            "seq": item.peak,
            "t": datetime.fromtimestamp(self.t_of(item.peak), UTC).isoformat(),
            "label": label,
            "probs": {
                c: round(float(p), 4) for c, p in zip(self.classifier.classes, out.class_probs, strict=True)
            },
            "p_abnormal": None if out.abnormal is None else round(out.abnormal, 4),
            "p_early_alarm": None if out.early is None else round(out.early, 4),
            "early_alarm": out.early is not None and out.early >= self.engine.limits.early_warning_threshold,
            "af": out.af,
            "quality_ok": self.quality_ok and self.technical is None,
            "t_arrival": item.arrival,
        }

    def take_outbox(self, now: float) -> list[LiveEvent]:
        """The queued messages as live events, stamped with the time they leave."""
        out = []
        for message in self.outbox:
            kind = message.pop("type")
            if kind == "beat":
                message["t_sent"] = now
            views = frozenset({"patient"}) if kind == "quality" else frozenset({"patient", "central"})
            out.append(LiveEvent(kind, message, views=views))
        self.outbox = []
        return out


def _technical_kind(flags: NDArray[np.int64]) -> TechnicalKind:
    """The technical condition of an unreadable window from its per-lead artifact flags."""
    every = int(np.bitwise_and.reduce(flags))
    if every & (Artifact.GAP | Artifact.CLIPPED):  # every lead at a rail or missing: electrodes off
        return TechnicalKind.LEAD_OFF
    if every & Artifact.FLAT:
        return TechnicalKind.FLAT_LINE
    return TechnicalKind.POOR_SIGNAL


def _alarm_message(change: AlarmChange, db_id: int | None) -> dict[str, Any]:
    a = change.alarm
    return {
        "type": "alarm",
        "alarm_id": db_id if db_id is not None else a.id,
        "change": change.change.value,
        "kind": a.kind.value,
        "priority": a.priority.value,
        "state": a.state.value,
        "started_at": datetime.fromtimestamp(a.start, UTC).isoformat(),
        "ended_at": None if a.end is None else datetime.fromtimestamp(a.end, UTC).isoformat(),
        "detail": a.detail,
    }


class _Writer:
    """Beat and heart-rate rows waiting to be written; alarm rows written at once."""

    def __init__(self, model_version: str) -> None:
        self.model_version = model_version
        self.beats: list[Beat] = []
        self.rates: list[tuple[int, datetime, int, float]] = []

    def beat(self, s: _Session, peak: int, label: str, out: _Output) -> None:
        p = {c: float(v) for c, v in zip(s.classifier.classes, out.class_probs.tolist(), strict=True)}
        self.beats.append(
            Beat(
                session_id=s.session_id,
                patient_id=s.patient_id,
                t=datetime.fromtimestamp(s.t_of(peak), UTC),
                r_peak_seq=peak,
                label=label,
                p_n=p.get("N", 0.0),
                p_s=p.get("S", 0.0),
                p_v=p.get("V", 0.0),
                p_f=p.get("F", 0.0),
                p_q=p.get("Q", 0.0),
                p_abnormal=out.abnormal,
                p_early_alarm=out.early,
                model_version=self.model_version,
            )
        )

    def heart_rate(self, s: _Session, t: datetime, hr: float) -> None:
        if s.patient_id is not None:  # vitals rows belong to a patient
            self.rates.append((s.patient_id, t, s.session_id, hr))

    def write(self, session: DbSession) -> None:
        """Write the waiting beats (skipping any already stored) and heart rates."""
        add_beats(session, self.beats)
        # One multi-row INSERT for the second's heart rates of every session (add_vitals
        # flushes each row on its own: a round trip per stream and second).
        session.add_all(
            Vitals(patient_id=patient_id, session_id=session_id, t=t, hr_ecg=hr)
            for patient_id, t, session_id, hr in self.rates
        )
        session.flush()
        self.beats, self.rates = [], []

    def alarm(self, session: DbSession, s: _Session, change: AlarmChange) -> int | None:
        """Insert a raised alarm, update a changed one; the row's id."""
        if s.patient_id is None:
            return None
        a = change.alarm
        ended = None if a.end is None else datetime.fromtimestamp(a.end, UTC)
        row_id = s.alarm_ids.get(a.id)
        row = session.get(Alarm, row_id) if row_id is not None else None
        if row is None:
            row = Alarm(
                patient_id=s.patient_id,
                kind=a.kind.value,
                priority=a.priority,
                state=a.state,
                started_at=datetime.fromtimestamp(a.start, UTC),
                ended_at=ended,
                detail=a.detail[:255],
            )
            session.add(row)
            session.flush()
            s.alarm_ids[a.id] = row.id
        else:
            row.state = _merged_state(row, a)
            row.priority, row.ended_at, row.detail = a.priority, ended, a.detail[:255]
        return int(row.id)


def _merged_state(row: Alarm, alarm: AlarmSnapshot) -> AlarmState:
    """The engine's new state, unless a user acknowledged the row meanwhile (in the dashboard).

    An acknowledged row stays acknowledged while its condition lasts (unless
    the priority rises) and resolves when it ends, as the engine would have
    done had the acknowledgement reached it.
    """
    if row.acknowledged_at is None or alarm.state is not AlarmState.ACTIVE:
        return alarm.state
    if alarm.end is not None:
        return AlarmState.RESOLVED
    escalated = alarm.priority.rank > AlarmPriority(row.priority).rank
    return AlarmState.ACTIVE if escalated else AlarmState.ACKNOWLEDGED


@torch.no_grad()
def _classify(classifier: BeatClassifier, ready: list[_Ready]) -> list[_Output]:
    """One batched forward for beats of many sessions, carrying each session's context."""
    model = classifier.model
    xs, rs, masks = [], [], []
    # One preparation (resampling, normalisation) for all the sessions that share a rate and a
    # lead count: the resampling filter is designed once per call, not once per session.
    shapes: dict[tuple[float, int], list[_Ready]] = {}
    for session, items in _by_session(ready):
        shapes.setdefault((session.fs, items[0].window.shape[0]), []).extend(items)
    order = [it for items in shapes.values() for it in items]
    for (fs, _), items in shapes.items():
        windows = np.stack([it.window for it in items])  # (k, L, W)
        x, r, mask, _ = classifier.prepare(windows, np.stack([it.rr for it in items]), fs=fs)
        xs.append(x)
        rs.append(r)
        masks.append(mask.expand(len(items), -1))
    feats = model.encode(torch.cat(xs)[:, None], torch.cat(rs)[:, None], torch.cat(masks))[:, 0]  # (B, D)
    sequences: dict[int, list[tuple[int, torch.Tensor]]] = {}
    for i, item in enumerate(order):
        context = item.session.context
        seq = torch.stack([*context, feats[i]])  # (T, D), T <= seq_len
        context.append(feats[i])
        sequences.setdefault(seq.shape[0], []).append((id(item), seq))
    heads: dict[int, tuple[NDArray[np.float32], float, NDArray[np.float32]]] = {}
    for group in sequences.values():
        s, _ = model.temporal(torch.stack([seq for _, seq in group]), last_only=True)  # (G, 1, hidden)
        out = model.heads(s[:, -1:])
        probs = torch.softmax(out.class_logits[:, 0], -1).numpy()  # (G, C)
        abnormal = torch.sigmoid(out.abnormal_logit[:, 0]).numpy()  # (G,)
        early = torch.softmax(out.early_logits[:, 0], -1).numpy()  # (G, H, C)
        for j, (key, _) in enumerate(group):
            heads[key] = (probs[j], float(abnormal[j]), early[j])
    n = classifier.classes.index("N")
    results = []
    for item in ready:  # in stream order within each session: the AF gate's history
        beat_probs, beat_abnormal, beat_early = heads[id(item)]
        gated = gate_beat(
            beat_probs,
            beat_early,
            item.rr,
            classifier.classes,
            svt_rule=classifier.svt_rule,
            monitor=item.session.af,
            prematurity=classifier.prematurity_gate,
        )
        early_alarm = float((1.0 - gated.early_probs[:, n]).max())
        results.append(_Output(gated.class_probs, beat_abnormal, early_alarm, gated.af))
    return results


def _unclassified(classes: Sequence[str]) -> _Output:
    """The output of a beat the classifier failed on: ``Q`` (unclassifiable), nothing else known."""
    probs = np.zeros(len(classes), np.float32)
    probs[list(classes).index("Q")] = 1.0
    return _Output(probs, None, None)


def _by_session(ready: list[_Ready]) -> list[tuple[_Session, list[_Ready]]]:
    """Ready beats grouped by session, each group in stream order."""
    groups: dict[int, tuple[_Session, list[_Ready]]] = {}
    for item in ready:
        groups.setdefault(id(item.session), (item.session, []))[1].append(item)
    return list(groups.values())
