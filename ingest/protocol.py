"""The device protocol: frames, parsing, validation, rate limiting, sequencing.

Everything here is pure: functions over ``str``/``bytes`` and small classes
that take the time as an argument, so that the async WebSocket handler only
moves data and every rule is tested without a network. ``docs/protocol.md``
is the device-facing description of the same protocol.

Sequence numbers count samples: a samples frame's ``seq`` is the index, in
the device's stream, of its first sample (per lead), and the next frame of
``n`` samples starts at ``seq + n``. The time of sample ``k`` is therefore
``stream start + k / fs``, gaps are measured in samples, and a resent frame
is recognised by its ``seq``. Every stream (``stream_id``) starts at 0.

Errors are :class:`ProtocolError` subclasses. Each carries the WebSocket
close code that the server sends after an ``error`` frame with the reason:

========  ============================  =========================================
code      exception                     meaning
========  ============================  =========================================
1003      UnsupportedFrameError         unknown frame type, protocol version or
                                        binary magic; binary before hello
1007      MalformedFrameError           bad JSON or binary layout, wrong types,
                                        NaN or infinity, values out of range
1008      HandshakeError                the first frame is not a hello, or a
                                        second hello arrives
1008      StreamChangedError            rate, leads or gain differ from the
                                        stream's hello
1008      SequenceError                 a frame partly overlaps stored samples
1009      FrameTooLargeError            frame bytes or samples over the limits
4001      AuthenticationError           unknown or revoked token
4002      RateLimitedError              too many frames per second
========  ============================  =========================================
"""

from __future__ import annotations

import json
import math
import re
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, ClassVar, NoReturn

import numpy as np
import numpy.typing as npt

__all__ = [
    "BINARY_HEADER",
    "BINARY_MAGIC",
    "DEFAULT_LIMITS",
    "PROTOCOL_VERSION",
    "Ack",
    "AuthenticationError",
    "CloseCode",
    "DeviceConnection",
    "Error",
    "Frame",
    "FrameTooLargeError",
    "HandshakeError",
    "Hello",
    "MalformedFrameError",
    "ProtocolError",
    "ProtocolLimits",
    "RateLimitedError",
    "Samples",
    "SeqDecision",
    "SeqKind",
    "SequenceError",
    "SequenceTracker",
    "StreamChangedError",
    "TokenBucket",
    "UnsupportedFrameError",
    "Vitals",
    "check_resume",
    "check_samples",
    "encode_binary_samples",
    "encode_text_frame",
    "error_frame",
    "parse_binary_frame",
    "parse_text_frame",
]

#: Version of this protocol; a hello with another ``protocol`` is refused.
PROTOCOL_VERSION = 1

#: First two bytes of a binary samples frame.
BINARY_MAGIC = b"CM"

#: Binary frame header: magic, version, lead count, seq, samples per lead, reserved.
BINARY_HEADER = struct.Struct("<2sBBQHH")

#: Largest sequence number (fits a signed 64-bit database column).
MAX_SEQ = 2**63 - 1

_INT16_MIN, _INT16_MAX = -(2**15), 2**15 - 1
_NAME_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
_CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's reason fits in 123 bytes


class CloseCode(IntEnum):
    """WebSocket close codes used by the ingest server."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    UNKNOWN_TOKEN = 4001
    RATE_LIMITED = 4002
    REPLACED = 4003


# Errors ----------------------------------------------------------------------


class ProtocolError(Exception):
    """A device broke the protocol; the connection is closed with ``close_code``.

    Parameters
    ----------
    reason : str
        Human-readable cause, sent to the device in the ``error`` frame.
    """

    close_code: ClassVar[CloseCode] = CloseCode.POLICY_VIOLATION

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def close_reason(self) -> str:
        """``reason`` cut to fit a WebSocket close frame (123 UTF-8 bytes)."""
        raw = self.reason.encode("utf-8")
        if len(raw) <= _CLOSE_REASON_BYTES:
            return self.reason
        return raw[: _CLOSE_REASON_BYTES - 3].decode("utf-8", errors="ignore") + "..."


class MalformedFrameError(ProtocolError):
    """Bad JSON or binary layout, wrong types, NaN, or values out of range."""

    close_code = CloseCode.INVALID_DATA


class UnsupportedFrameError(ProtocolError):
    """A frame type, protocol version or binary format the server does not speak."""

    close_code = CloseCode.UNSUPPORTED_DATA


class FrameTooLargeError(ProtocolError):
    """A frame over ``max_frame_bytes`` or ``max_samples_per_frame``."""

    close_code = CloseCode.MESSAGE_TOO_BIG


class HandshakeError(ProtocolError):
    """The first frame is not a hello, or a hello arrives twice."""


class StreamChangedError(ProtocolError):
    """The sampling rate, leads or gain differ from the stream's hello."""


class SequenceError(ProtocolError):
    """A frame partly overlaps samples already received."""


class AuthenticationError(ProtocolError):
    """The token is unknown or revoked."""

    close_code = CloseCode.UNKNOWN_TOKEN


class RateLimitedError(ProtocolError):
    """The device sends more frames per second than allowed."""

    close_code = CloseCode.RATE_LIMITED


# Frames ----------------------------------------------------------------------


@dataclass(frozen=True)
class ProtocolLimits:
    """Limits that protect the server; all checked by the parsers.

    Attributes
    ----------
    max_frame_bytes : int
        Largest text or binary frame, in bytes (64 KiB).
    max_samples_per_frame : int
        Most samples per lead in one frame (4096: 11 s at 360 Hz).
    max_leads : int
        Most leads in a stream (12).
    min_fs, max_fs : float
        Accepted sampling rates in Hz (50 to 2000).
    frames_per_second : float
        Sustained frame rate a device may send (token-bucket rate).
    burst_frames : int
        Frames a device may send at once, e.g. a resend after a reconnect
        (token-bucket capacity).
    """

    max_frame_bytes: int = 65_536
    max_samples_per_frame: int = 4096
    max_leads: int = 12
    min_fs: float = 50.0
    max_fs: float = 2000.0
    frames_per_second: float = 50.0
    burst_frames: int = 500


DEFAULT_LIMITS = ProtocolLimits()


@dataclass(frozen=True)
class Hello:
    """First frame of every connection: who the device is and what it sends.

    Attributes
    ----------
    token : str
        The device's secret (never printed: excluded from ``repr``).
    device_id : str
        The device's identifier (``[A-Za-z0-9._:-]``, at most 64 characters).
    stream_id : str
        Names the sequence space: the same after a reconnect, new after a
        reboot that restarts ``seq`` at 0.
    fs : float
        Sampling rate in Hz.
    leads : tuple of str
        Lead names, one per sample column.
    gain : float
        ADC counts per physical unit.
    units : str
        Physical unit of the samples (``"mV"``).
    baseline : int
        ADC count of 0 physical units.
    firmware : str
        Firmware version.
    sensors : tuple of str
        Optional sensors present (``"spo2"``, ``"temperature"``, ...).
    protocol : int
        Protocol version.
    """

    token: str = field(repr=False)
    device_id: str
    stream_id: str
    fs: float
    leads: tuple[str, ...]
    gain: float
    units: str = "mV"
    baseline: int = 0
    firmware: str = ""
    sensors: tuple[str, ...] = ()
    protocol: int = PROTOCOL_VERSION


@dataclass(frozen=True, eq=False)
class Samples:
    """A frame of samples: ``samples[i, j]`` is sample ``seq + i`` of lead ``j``."""

    seq: int
    samples: npt.NDArray[np.int16]

    @property
    def n_samples(self) -> int:
        """Samples per lead."""
        return int(self.samples.shape[0])

    @property
    def end_seq(self) -> int:
        """Sequence number of the next frame's first sample."""
        return self.seq + self.n_samples


@dataclass(frozen=True)
class Vitals:
    """Readings of the optional sensors; ``None`` where not measured.

    ``seq`` optionally places the readings on the ECG sample clock.
    """

    seq: int | None = None
    spo2: float | None = None
    pulse: float | None = None
    temperature: float | None = None
    battery: float | None = None
    rssi: int | None = None


@dataclass(frozen=True)
class Ack:
    """Server to device: these samples are stored and need no resend.

    Attributes
    ----------
    upto : int
        Every sample with ``seq < upto`` of the stream is stored (a stream's
        ``seq`` starts at 0).
    ranges : tuple of (int, int)
        Further stored ranges ``[start, end)`` (typically the frame just stored).
    """

    upto: int
    ranges: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Error:
    """Server to device, just before closing: why, and the close code."""

    code: int
    reason: str


Frame = Hello | Samples | Vitals | Ack | Error

_VITAL_RANGES: dict[str, tuple[float, float]] = {
    "spo2": (0.0, 100.0),
    "pulse": (0.0, 350.0),
    "temperature": (15.0, 45.0),
    "battery": (0.0, 100.0),
}


# Parsing ---------------------------------------------------------------------


def parse_text_frame(text: str, limits: ProtocolLimits = DEFAULT_LIMITS) -> Frame:
    """Parse and validate one JSON text frame.

    Parameters
    ----------
    text : str
        The WebSocket text message.
    limits : ProtocolLimits
        Size and range limits.

    Returns
    -------
    Hello, Samples, Vitals, Ack or Error
        By the frame's ``type``. Unknown keys are ignored, so that newer
        firmware may add fields.

    Raises
    ------
    FrameTooLargeError
        Over ``limits.max_frame_bytes`` or ``limits.max_samples_per_frame``.
    MalformedFrameError
        Not JSON, not an object, NaN or infinity anywhere, a missing field,
        a field of the wrong type or out of range.
    UnsupportedFrameError
        Unknown ``type`` or protocol version.

    Examples
    --------
    >>> parse_text_frame('{"type": "samples", "seq": 0, "samples": [512, 515]}').n_samples
    2
    """
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > limits.max_frame_bytes:
        raise FrameTooLargeError(f"text frame of {size} bytes exceeds {limits.max_frame_bytes}")
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise MalformedFrameError(f"invalid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise MalformedFrameError(f"a frame must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    parser = _TEXT_PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise UnsupportedFrameError(
            f"unknown frame type {kind!r}; expected one of {', '.join(sorted(_TEXT_PARSERS))}"
        )
    return parser(obj, limits)


def parse_binary_frame(data: bytes, limits: ProtocolLimits = DEFAULT_LIMITS) -> Samples:
    """Parse a binary samples frame.

    Layout (little-endian): ``magic`` ``b"CM"`` (2 bytes), ``version`` = 1
    (uint8), ``n_leads`` (uint8), ``seq`` (uint64), ``n_samples`` per lead
    (uint16), reserved = 0 (uint16), then ``n_samples * n_leads`` int16
    samples, sample-major (``s0l0 s0l1 ... s1l0 ...``).

    Raises
    ------
    FrameTooLargeError
        Over the byte or sample limits.
    UnsupportedFrameError
        Wrong magic or version.
    MalformedFrameError
        Truncated or padded payload, zero leads or samples, nonzero reserved
        bytes, ``seq`` beyond 2**63 - 1.
    """
    if len(data) > limits.max_frame_bytes:
        raise FrameTooLargeError(f"binary frame of {len(data)} bytes exceeds {limits.max_frame_bytes}")
    if len(data) < BINARY_HEADER.size:
        raise MalformedFrameError(
            f"binary frame of {len(data)} bytes is shorter than its {BINARY_HEADER.size}-byte header"
        )
    magic, version, n_leads, seq, n_samples, reserved = BINARY_HEADER.unpack_from(data)
    if magic != BINARY_MAGIC:
        raise UnsupportedFrameError(f"binary frame magic {magic!r} is not {BINARY_MAGIC!r}")
    if version != PROTOCOL_VERSION:
        raise UnsupportedFrameError(
            f"binary frame version {version} is not supported (expected {PROTOCOL_VERSION})"
        )
    if reserved != 0:
        raise MalformedFrameError(f"binary frame reserved field must be 0, got {reserved}")
    if not 1 <= n_leads <= limits.max_leads:
        raise MalformedFrameError(f"binary frame `n_leads` must be 1 to {limits.max_leads}, got {n_leads}")
    _check_sample_count(n_samples, limits)
    _check_seq(seq)
    expected = BINARY_HEADER.size + 2 * n_samples * n_leads
    if len(data) != expected:
        raise MalformedFrameError(
            f"binary frame is {len(data)} bytes; header says {expected} "
            f"({n_samples} samples x {n_leads} leads)"
        )
    samples = np.frombuffer(data, dtype="<i2", offset=BINARY_HEADER.size).reshape(n_samples, n_leads)
    return Samples(seq=seq, samples=samples.astype(np.int16))


def encode_binary_samples(frame: Samples) -> bytes:
    """Encode a samples frame in the binary layout of :func:`parse_binary_frame`."""
    n_samples, n_leads = frame.samples.shape
    header = BINARY_HEADER.pack(BINARY_MAGIC, PROTOCOL_VERSION, n_leads, frame.seq, n_samples, 0)
    return header + np.ascontiguousarray(frame.samples, dtype="<i2").tobytes()


def encode_text_frame(frame: Frame) -> str:
    """Encode any frame as the JSON text that :func:`parse_text_frame` reads."""
    obj: dict[str, Any]
    if isinstance(frame, Hello):
        obj = {
            "type": "hello",
            "protocol": frame.protocol,
            "token": frame.token,
            "device_id": frame.device_id,
            "stream_id": frame.stream_id,
            "fs": frame.fs,
            "leads": list(frame.leads),
            "units": frame.units,
            "gain": frame.gain,
            "baseline": frame.baseline,
            "firmware": frame.firmware,
            "sensors": list(frame.sensors),
        }
    elif isinstance(frame, Samples):
        obj = {"type": "samples", "seq": frame.seq, "samples": frame.samples.tolist()}
    elif isinstance(frame, Vitals):
        values = {
            "seq": frame.seq,
            "spo2": frame.spo2,
            "pulse": frame.pulse,
            "temperature": frame.temperature,
            "battery": frame.battery,
            "rssi": frame.rssi,
        }
        obj = {"type": "vitals", **{k: v for k, v in values.items() if v is not None}}
    elif isinstance(frame, Ack):
        obj = {"type": "ack", "upto": frame.upto, "ranges": [list(r) for r in frame.ranges]}
    else:
        obj = {"type": "error", "code": frame.code, "reason": frame.reason}
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def error_frame(exc: ProtocolError) -> Error:
    """The ``error`` frame that announces closing for ``exc``."""
    return Error(code=int(exc.close_code), reason=exc.close_reason)


# Validation against the stream -----------------------------------------------


def check_samples(frame: Samples, hello: Hello) -> None:
    """Check a samples frame against the connection's hello.

    Raises
    ------
    StreamChangedError
        If the frame's lead count differs from the hello's.
    """
    n_leads = frame.samples.shape[1]
    if n_leads != len(hello.leads):
        raise StreamChangedError(
            f"samples frame has {n_leads} leads but the stream's hello declared {len(hello.leads)} "
            f"({', '.join(hello.leads)}); start a new stream_id to change leads"
        )


def check_resume(previous: Hello, new: Hello) -> None:
    """Check that a reconnecting device describes its stream as before.

    A device that resumes a ``stream_id`` continues its sequence numbers, so
    the rate, leads, gain, baseline and units must be those of the first
    hello of the stream.

    Raises
    ------
    StreamChangedError
        Naming the first field that changed.
    """
    for name in ("fs", "leads", "gain", "baseline", "units"):
        before, after = getattr(previous, name), getattr(new, name)
        if before != after:
            raise StreamChangedError(
                f"stream {new.stream_id!r} changed `{name}` from {before!r} to {after!r}; "
                "a changed signal needs a new stream_id"
            )


# Rate limiting -----------------------------------------------------------------


class TokenBucket:
    """Token-bucket rate limiter; pure, the caller passes the time.

    Parameters
    ----------
    rate : float
        Tokens added per second (the sustained rate).
    capacity : float
        Most tokens held (the burst). The bucket starts full.

    Examples
    --------
    >>> bucket = TokenBucket(rate=1.0, capacity=2)
    >>> [bucket.consume(0.0) for _ in range(3)]
    [True, True, False]
    >>> bucket.consume(1.0)
    True
    """

    def __init__(self, rate: float, capacity: float) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"`rate` must be positive and finite, got {rate}")
        if not (math.isfinite(capacity) and capacity >= 1):
            raise ValueError(f"`capacity` must be at least 1, got {capacity}")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self._tokens = float(capacity)
        self._last: float | None = None

    def consume(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens at time ``now`` (seconds); ``False`` if too few.

        A clock that goes backwards adds no tokens.
        """
        if self._last is not None and now > self._last:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now if self._last is None else max(now, self._last)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def check(self, now: float) -> None:
        """Consume one token or raise :class:`RateLimitedError`."""
        if not self.consume(now):
            raise RateLimitedError(f"more than {self.rate:g} frames per second (burst {self.capacity:g})")


# Connection ----------------------------------------------------------------------


class DeviceConnection:
    """The per-connection rules, as a pure state machine over raw messages.

    It enforces the order (a hello first, once), the rate limit, the limits
    and the stream's shape. Token checks need storage and stay with the
    handler, which calls :meth:`receive` for every message and closes the
    connection with ``exc.close_code`` on :class:`ProtocolError`.

    Parameters
    ----------
    limits : ProtocolLimits
        Size and rate limits.
    """

    def __init__(self, limits: ProtocolLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.hello: Hello | None = None
        self._bucket = TokenBucket(limits.frames_per_second, limits.burst_frames)

    def receive(self, message: str | bytes, now: float) -> Hello | Samples | Vitals:
        """Parse one message received at ``now`` (seconds) and check it in context.

        Raises
        ------
        ProtocolError
            The subclass that says why; the connection must then close.
        """
        self._bucket.check(now)
        if isinstance(message, bytes):
            if self.hello is None:
                raise HandshakeError("the first frame must be a JSON hello, got a binary frame")
            frame: Frame = parse_binary_frame(message, self.limits)
        else:
            frame = parse_text_frame(message, self.limits)
        if isinstance(frame, Ack | Error):
            raise UnsupportedFrameError(f"devices do not send {type(frame).__name__.lower()} frames")
        if self.hello is None:
            if not isinstance(frame, Hello):
                raise HandshakeError(f"the first frame must be a hello, got {type(frame).__name__.lower()}")
            self.hello = frame
        elif isinstance(frame, Hello):
            check_resume(self.hello, frame)
            raise HandshakeError("hello was already received on this connection")
        elif isinstance(frame, Samples):
            check_samples(frame, self.hello)
        return frame


# Sequencing --------------------------------------------------------------------


class SeqKind(StrEnum):
    """How a samples frame relates to what the stream already received."""

    NEW = "new"
    """Continues the stream exactly where it ended (or starts it at seq 0)."""
    GAP = "gap"
    """Starts after the end: the samples in between are missing, for now."""
    OUT_OF_ORDER = "out-of-order"
    """Lands before the end, in a gap: a late or resent frame fills it."""
    DUPLICATE = "duplicate"
    """Every sample was received already: ignore it (but acknowledge it)."""


@dataclass(frozen=True)
class SeqDecision:
    """What to do with one samples frame.

    Attributes
    ----------
    kind : SeqKind
        See :class:`SeqKind`.
    start, end : int
        The frame's samples ``[start, end)``.
    gap : (int, int) or None
        For ``GAP``: the missing samples ``[start, end)`` that the frame
        reveals. Gaps are recorded, never filled with invented samples.
    stored : bool
        For ``DUPLICATE``: whether the samples are already stored, so that the
        server re-acknowledges at once (an earlier ack may have been lost).
    """

    kind: SeqKind
    start: int
    end: int
    gap: tuple[int, int] | None = None
    stored: bool = False


class SequenceTracker:
    """Per-stream bookkeeping of received and stored samples (pure).

    Two-phase, so that nothing is acknowledged before it is stored:
    :meth:`observe` classifies an incoming frame and marks it received;
    :meth:`mark_stored` records that storage committed it, after which
    :meth:`ack` acknowledges it. :meth:`discard_pending` forgets frames that
    were received but will not be stored (the connection dropped), so that
    their resend is accepted.

    Parameters
    ----------
    stored : iterable of (int, int)
        Ranges already in storage, e.g. from :func:`storage.stored_ranges`
        after a restart.

    Examples
    --------
    >>> tracker = SequenceTracker()
    >>> tracker.observe(0, 100).kind, tracker.observe(200, 50).gap
    (<SeqKind.NEW: 'new'>, (100, 200))
    >>> tracker.observe(100, 100).kind
    <SeqKind.OUT_OF_ORDER: 'out-of-order'>
    """

    def __init__(self, stored: Iterable[tuple[int, int]] = ()) -> None:
        self._stored = _RangeSet()
        self._received = _RangeSet()
        for start, end in stored:
            self._stored.add(start, end)
            self._received.add(start, end)

    def classify(self, seq: int, n: int) -> SeqDecision:
        """Classify samples ``[seq, seq + n)`` without recording them.

        Raises
        ------
        SequenceError
            If the frame partly overlaps received samples.
        ValueError
            If ``n`` is not positive or ``seq`` is negative.
        """
        if n <= 0 or seq < 0:
            raise ValueError(f"a frame needs `seq` >= 0 and `n` > 0, got seq={seq}, n={n}")
        end = seq + n
        if self._received.covers(seq, end):
            return SeqDecision(SeqKind.DUPLICATE, seq, end, stored=self._stored.covers(seq, end))
        if self._received.overlaps(seq, end):
            raise SequenceError(
                f"frame [{seq}, {end}) partly overlaps samples already received; "
                "resend frames with their original boundaries"
            )
        last = self._received.last_end or 0  # every stream starts at seq 0
        if seq == last:
            return SeqDecision(SeqKind.NEW, seq, end)
        if seq > last:
            return SeqDecision(SeqKind.GAP, seq, end, gap=(last, seq))
        return SeqDecision(SeqKind.OUT_OF_ORDER, seq, end)

    def observe(self, seq: int, n: int) -> SeqDecision:
        """Classify samples ``[seq, seq + n)`` and mark them received."""
        decision = self.classify(seq, n)
        if decision.kind is not SeqKind.DUPLICATE:
            self._received.add(seq, seq + n)
        return decision

    def mark_stored(self, seq: int, n: int) -> None:
        """Record that samples ``[seq, seq + n)``, observed before, are stored."""
        if not self._received.covers(seq, seq + n):
            raise ValueError(f"samples [{seq}, {seq + n}) were not observed before being stored")
        self._stored.add(seq, seq + n)

    def discard_pending(self) -> None:
        """Forget received samples that were not stored."""
        self._received = self._stored.copy()

    def ack(self, seq: int | None = None, n: int = 0) -> Ack:
        """The acknowledgement to send: ``upto``, plus ``[seq, seq + n)`` if stored."""
        if seq is not None and n > 0 and not self._stored.covers(seq, seq + n):
            raise ValueError(f"samples [{seq}, {seq + n}) are not stored and cannot be acknowledged")
        upto = self.upto
        ranges = ((seq, seq + n),) if seq is not None and n > 0 and seq + n > upto else ()
        return Ack(upto=upto, ranges=ranges)

    @property
    def upto(self) -> int:
        """Every sample with ``seq < upto`` is stored (streams start at seq 0)."""
        first = self._stored.first
        return first[1] if first is not None and first[0] == 0 else 0

    @property
    def stored_ranges(self) -> list[tuple[int, int]]:
        """Stored ranges ``[start, end)``, merged and sorted."""
        return self._stored.ranges()

    @property
    def gaps(self) -> list[tuple[int, int]]:
        """Missing ranges between received samples (pending frames count as received)."""
        return self._received.holes()


# Internals -------------------------------------------------------------------


class _RangeSet:
    """Disjoint, merged half-open integer ranges, kept sorted."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def copy(self) -> _RangeSet:
        other = _RangeSet()
        other._starts, other._ends = list(self._starts), list(self._ends)
        return other

    def add(self, start: int, end: int) -> None:
        lo = bisect_left(self._ends, start)  # first range that ends at or after start
        hi = bisect_right(self._starts, end)  # ranges starting at or before end
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def covers(self, start: int, end: int) -> bool:
        i = bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect_right(self._ends, start)  # first range ending after start
        return i < len(self._starts) and self._starts[i] < end

    @property
    def first(self) -> tuple[int, int] | None:
        return (self._starts[0], self._ends[0]) if self._starts else None

    @property
    def last_end(self) -> int | None:
        return self._ends[-1] if self._ends else None

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def holes(self) -> list[tuple[int, int]]:
        return list(zip(self._ends[:-1], self._starts[1:], strict=True))


def _refuse_constant(name: str) -> NoReturn:
    raise MalformedFrameError(f"{name} is not allowed; send finite numbers or null")


def _fail(message: str) -> NoReturn:
    raise MalformedFrameError(message)


def _get_int(obj: Mapping[str, Any], key: str, lo: int, hi: int, *, default: int | None = None) -> int:
    value = obj.get(key, default)
    if type(value) is not int:
        _fail(f"`{key}` must be an integer, got {_describe(value)}")
    if not lo <= value <= hi:
        _fail(f"`{key}` must be in [{lo}, {hi}], got {value}")
    return value


def _get_number(obj: Mapping[str, Any], key: str, lo: float, hi: float) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(f"`{key}` must be a number, got {_describe(value)}")
    number = float(value)
    if not (math.isfinite(number) and lo <= number <= hi):
        _fail(f"`{key}` must be a finite number in [{lo:g}, {hi:g}], got {value}")
    return number


def _get_str(obj: Mapping[str, Any], key: str, *, max_len: int, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        _fail(f"`{key}` must be a string, got {_describe(value)}")
    if not value.isprintable():  # also refuses lone surrogates, which UTF-8 cannot encode
        _fail(f"`{key}` must be printable text")
    min_len = 0 if default == "" else 1  # an optional string may be empty
    if not min_len <= len(value) <= max_len:
        _fail(f"`{key}` must be {min_len} to {max_len} characters, got {len(value)}")
    return value


def _get_names(obj: Mapping[str, Any], key: str, *, max_items: int, required: bool) -> tuple[str, ...]:
    value = obj.get(key, None if required else [])
    if not isinstance(value, list) or not all(
        isinstance(v, str) and 1 <= len(v) <= 32 and v.isprintable() for v in value
    ):
        _fail(f"`{key}` must be a list of names of 1 to 32 characters, got {_describe(value)}")
    if required and not value:
        _fail(f"`{key}` must name at least one lead")
    if len(value) > max_items:
        _fail(f"`{key}` lists {len(value)} items, at most {max_items} allowed")
    if len(set(value)) != len(value):
        _fail(f"`{key}` has duplicate names: {value}")
    return tuple(value)


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _check_seq(seq: int) -> None:
    if not 0 <= seq <= MAX_SEQ:
        _fail(f"`seq` must be in [0, {MAX_SEQ}], got {seq}")


def _check_sample_count(n: int, limits: ProtocolLimits) -> None:
    if n > limits.max_samples_per_frame:
        raise FrameTooLargeError(f"{n} samples per lead exceed the limit of {limits.max_samples_per_frame}")
    if n < 1:
        _fail("a samples frame must hold at least one sample")


def _parse_hello(obj: Mapping[str, Any], limits: ProtocolLimits) -> Hello:
    protocol = _get_int(obj, "protocol", 0, 255, default=PROTOCOL_VERSION)
    if protocol != PROTOCOL_VERSION:
        raise UnsupportedFrameError(
            f"protocol version {protocol} is not supported (expected {PROTOCOL_VERSION})"
        )
    device_id = _get_str(obj, "device_id", max_len=64)
    stream_id = _get_str(obj, "stream_id", max_len=64)
    for key, value in (("device_id", device_id), ("stream_id", stream_id)):
        if not _NAME_RE.match(value):
            _fail(f"`{key}` may hold only letters, digits and . _ : -, got {value!r}")
    return Hello(
        token=_get_str(obj, "token", max_len=256),
        device_id=device_id,
        stream_id=stream_id,
        fs=_get_number(obj, "fs", limits.min_fs, limits.max_fs),
        leads=_get_names(obj, "leads", max_items=limits.max_leads, required=True),
        gain=_get_positive(obj, "gain"),
        units=_get_str(obj, "units", max_len=16, default="mV"),
        baseline=_get_int(obj, "baseline", _INT16_MIN, _INT16_MAX, default=0),
        firmware=_get_str(obj, "firmware", max_len=64, default=""),
        sensors=_get_names(obj, "sensors", max_items=16, required=False),
        protocol=protocol,
    )


def _get_positive(obj: Mapping[str, Any], key: str) -> float:
    value = _get_number(obj, key, 0.0, 1e9)
    if value <= 0:
        _fail(f"`{key}` must be positive, got {value:g}")
    return value


def _parse_samples(obj: Mapping[str, Any], limits: ProtocolLimits) -> Samples:
    seq = _get_int(obj, "seq", 0, MAX_SEQ)
    rows = obj.get("samples")
    if not isinstance(rows, list):
        _fail(f"`samples` must be a list, got {_describe(rows)}")
    _check_sample_count(len(rows), limits)
    if all(type(v) is int for v in rows):  # one lead, written flat
        table: Sequence[Sequence[Any]] = [[v] for v in rows]
    elif all(isinstance(row, list) for row in rows):
        table = rows
    else:
        _fail("`samples` must be a list of integers (one lead) or of rows of integers (one per lead)")
    n_leads = len(table[0])
    if not 1 <= n_leads <= limits.max_leads or any(len(row) != n_leads for row in table):
        _fail(f"every row of `samples` must hold the same number of leads, 1 to {limits.max_leads}")
    if not all(type(v) is int and _INT16_MIN <= v <= _INT16_MAX for row in table for v in row):
        _fail(f"`samples` must be integers in [{_INT16_MIN}, {_INT16_MAX}] (raw ADC counts)")
    return Samples(seq=seq, samples=np.array(table, dtype=np.int16))


def _parse_vitals(obj: Mapping[str, Any], limits: ProtocolLimits) -> Vitals:
    seq = _get_int(obj, "seq", 0, MAX_SEQ) if obj.get("seq") is not None else None
    values = {
        key: _get_number(obj, key, lo, hi)
        for key, (lo, hi) in _VITAL_RANGES.items()
        if obj.get(key) is not None
    }
    rssi = _get_int(obj, "rssi", -200, 0) if obj.get("rssi") is not None else None
    if not values and rssi is None:
        _fail(f"a vitals frame needs at least one of {', '.join([*_VITAL_RANGES, 'rssi'])}")
    return Vitals(seq=seq, rssi=rssi, **values)


def _parse_ack(obj: Mapping[str, Any], limits: ProtocolLimits) -> Ack:
    upto = _get_int(obj, "upto", 0, MAX_SEQ)
    ranges = obj.get("ranges", [])
    if not isinstance(ranges, list) or not all(
        isinstance(r, list)
        and len(r) == 2
        and all(type(v) is int and 0 <= v <= MAX_SEQ for v in r)
        and r[0] < r[1]
        for r in ranges
    ):
        _fail("`ranges` must be a list of [start, end] pairs with 0 <= start < end")
    return Ack(upto=upto, ranges=tuple((r[0], r[1]) for r in ranges))


def _parse_error(obj: Mapping[str, Any], limits: ProtocolLimits) -> Error:
    return Error(
        code=_get_int(obj, "code", 1000, 4999), reason=_get_str(obj, "reason", max_len=1024, default="")
    )


_TEXT_PARSERS: dict[str, Callable[[Mapping[str, Any], ProtocolLimits], Frame]] = {
    "hello": _parse_hello,
    "samples": _parse_samples,
    "vitals": _parse_vitals,
    "ack": _parse_ack,
    "error": _parse_error,
}
