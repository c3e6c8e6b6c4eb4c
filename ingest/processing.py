"""The hook between stored samples and the live view: stream processors.

The ingest server stores every block of samples a device sends, then hands
it to a :class:`StreamProcessor` in a worker thread (never on the event
loop) and publishes the :class:`LiveEvent` objects it returns. The analysis
pipeline (R peaks, beat classification, alarms) is one such processor;
:class:`DisplayProcessor`, shipped here, only produces the display trace, so
that ``/live`` works without a model.

A processor may also have a ``tick(now)`` method (:class:`TickingProcessor`):
the server then calls it about once a second, in the same worker thread, so
that time-driven conditions (a device gone silent, an acknowledgement made in
the dashboard) are noticed while no data arrives. The events it returns name
their stream themselves (``patient_id``, ``session_id``, ``replay`` in
``data``), as they may concern streams whose connection has ended.

Calls for one recording session are made one at a time and in the order
the blocks were stored (which is not always ``seq`` order: a late frame is
stored when it arrives, see :attr:`StoredBlock.kind`). Calls for different
sessions may run concurrently in different threads, so a processor keeps
its per-session state apart.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np

from ingest.protocol import SeqKind, Vitals
from sigproc.filters import StreamingFilter, design_sos
from storage.codec import SampleBlock

__all__ = [
    "DisplayProcessor",
    "LiveEvent",
    "StoredBlock",
    "StreamProcessor",
    "TickingProcessor",
    "VitalsReading",
]

#: Views a live event can go to: one patient's full view, and the central view.
VIEWS: frozenset[str] = frozenset({"patient", "central"})


@dataclass(frozen=True, eq=False, kw_only=True)
class StoredBlock(SampleBlock):
    """A block of samples that storage has committed.

    A :class:`storage.SampleBlock` (``samples``: int16 ADC counts of shape
    ``(n_samples, n_leads)``, ``fs``, ``lead_names``, ``gain``,
    ``baseline``, ``first_seq``, :meth:`physical`) placed in its stream.

    Attributes
    ----------
    session_id : int
        The recording session (stream).
    patient_id : int or None
        The patient the device is assigned to.
    started_at : datetime
        Time of sample 0 of the stream (UTC).
    kind : SeqKind
        ``NEW`` (continues the stream), ``GAP`` (after missing samples) or
        ``OUT_OF_ORDER`` (a late frame that fills a gap).
    replay : bool
        Whether the stream is a replayed recording, not a patient.
    received_at : datetime or None
        When the frame was read off the device's socket (UTC), for latency
        measurement; None where unknown.
    """

    session_id: int
    patient_id: int | None
    started_at: datetime
    kind: SeqKind = SeqKind.NEW
    replay: bool = False
    received_at: datetime | None = None

    def time_of(self, seq: int) -> datetime:
        """Time of sample ``seq`` of the stream."""
        return self.started_at + timedelta(seconds=seq / self.fs)


@dataclass(frozen=True)
class VitalsReading:
    """A stored vitals frame, placed in time.

    Attributes
    ----------
    session_id : int
        The recording session.
    patient_id : int or None
        The patient the device is assigned to.
    t : datetime
        When it was measured: on the sample clock when the frame has a
        ``seq``, else when it arrived.
    vitals : Vitals
        The readings, as the device sent them.
    simulated : frozenset of str
        The readings the device declared simulated (the replay client's).
    replay : bool
        Whether the stream is a replayed recording.
    """

    session_id: int
    patient_id: int | None
    t: datetime
    vitals: Vitals
    simulated: frozenset[str] = frozenset()
    replay: bool = False


@dataclass(frozen=True)
class LiveEvent:
    """Something to show live: published as ``{"type": kind, **data}``.

    Attributes
    ----------
    kind : str
        The message type: ``"trace"``, ``"beat"``, ``"alarm"``, ...
    data : mapping
        JSON-serialisable fields. The server adds ``patient_id``,
        ``session_id`` and ``replay``.
    views : frozenset of str
        ``"patient"`` (one patient's full view), ``"central"`` (the
        overview of all patients), or both.
    """

    kind: str
    data: Mapping[str, Any]
    views: frozenset[str] = field(default=VIEWS)

    def __post_init__(self) -> None:
        if not self.views or not self.views <= VIEWS:
            raise ValueError(f"`views` must be a non-empty subset of {sorted(VIEWS)}, got {set(self.views)}")


class StreamProcessor(Protocol):
    """Turns stored data into live events; called from a worker thread."""

    def process(self, block: StoredBlock) -> Sequence[LiveEvent]:
        """Events for a newly stored block (display trace, beats, alarm changes)."""
        ...

    def vitals(self, reading: VitalsReading) -> Sequence[LiveEvent]:
        """Events derived from a stored vitals reading (e.g. alarm changes)."""
        ...

    def close_stream(self, session_id: int) -> Sequence[LiveEvent]:
        """The device's connection ended; the stream may resume later."""
        ...


class TickingProcessor(StreamProcessor, Protocol):
    """A stream processor with time-driven work (optional: the server checks for ``tick``)."""

    def tick(self, now: float) -> Sequence[LiveEvent]:
        """Time-driven events at wall-clock time ``now`` (seconds since the epoch).

        Each event's ``data`` carries ``patient_id``, ``session_id`` and
        ``replay``: the server publishes it to that patient's topics (an
        event without a patient is dropped).
        """
        ...


class DisplayProcessor:
    """The display trace: a causal 0.5-40 Hz band-pass, per session.

    The patient view gets every lead at the device's rate; the central view
    gets the first lead, decimated to the lowest rate whose Nyquist frequency
    stays above the band's upper edge (360 Hz -> 90 Hz), so that decimation
    folds nothing back into the pass band. Late (out-of-order) blocks are
    not drawn: the live trace only moves forward. After a gap the filter
    restarts.

    Parameters
    ----------
    low_hz, high_hz : float
        Band-pass edges in Hz.
    order : int
        Butterworth order.
    decimals : int
        Millivolt values are rounded to this many decimals, which keeps the
        JSON small (the ADC step of MIT-BIH is 5 uV).
    """

    def __init__(
        self, low_hz: float = 0.5, high_hz: float = 40.0, *, order: int = 2, decimals: int = 3
    ) -> None:
        self.low_hz = low_hz
        self.high_hz = high_hz
        self.order = order
        self.decimals = decimals
        self._streams: dict[int, _DisplayState] = {}
        self._lock = threading.Lock()

    def process(self, block: StoredBlock) -> Sequence[LiveEvent]:
        """Filter the block and return the patient and central trace events."""
        state = self._state(block)
        if block.first_seq < state.next_seq:
            return []
        if block.first_seq > state.next_seq:
            state.filter.reset()
        filtered = np.round(state.filter.process(block.physical()), self.decimals)  # (n, leads)
        state.next_seq = block.end_seq
        events = [
            LiveEvent(
                "trace",
                {
                    "seq": block.first_seq,
                    "t0": block.time_of(block.first_seq).isoformat(),
                    "fs": block.fs,
                    "leads": list(block.lead_names),
                    "values": filtered.T.tolist(),  # one list per lead, for extendTraces
                },
                views=frozenset({"patient"}),
            )
        ]
        start = -block.first_seq % state.factor  # keep samples whose seq is a multiple of factor
        if start < block.n_samples:
            central = filtered[start :: state.factor, 0]
            events.append(
                LiveEvent(
                    "trace",
                    {
                        "seq": block.first_seq + start,
                        "t0": block.time_of(block.first_seq + start).isoformat(),
                        "fs": block.fs / state.factor,
                        "leads": [block.lead_names[0]],
                        "values": [central.tolist()],
                        "decimation": state.factor,
                    },
                    views=frozenset({"central"}),
                )
            )
        return events

    def vitals(self, reading: VitalsReading) -> Sequence[LiveEvent]:
        """No derived events: the server publishes the readings themselves."""
        return []

    def close_stream(self, session_id: int) -> Sequence[LiveEvent]:
        """Forget the session's filter state."""
        with self._lock:
            self._streams.pop(session_id, None)
        return []

    def tick(self, now: float) -> Sequence[LiveEvent]:
        """Nothing is time-driven in the display trace."""
        return []

    @property
    def n_streams(self) -> int:
        """Sessions whose filter state is held (until :meth:`close_stream`)."""
        with self._lock:
            return len(self._streams)

    def decimation(self, fs: float) -> int:
        """Central-view decimation factor at sampling rate ``fs``."""
        return max(1, int(fs // (2.0 * self.high_hz)))

    def _state(self, block: StoredBlock) -> _DisplayState:
        with self._lock:
            state = self._streams.get(block.session_id)
            if state is None:
                sos = design_sos(
                    "bandpass", block.fs, low_hz=self.low_hz, high_hz=self.high_hz, order=self.order
                )
                trace = StreamingFilter(sos, n_leads=len(block.lead_names))
                state = _DisplayState(trace, block.first_seq, self.decimation(block.fs))
                self._streams[block.session_id] = state
            return state


@dataclass
class _DisplayState:
    filter: StreamingFilter
    next_seq: int
    factor: int
