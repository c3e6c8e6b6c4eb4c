"""Replay devices: stream MIT-BIH records through the device protocol, like a NodeMCU.

A :class:`ReplayDevice` behaves as the firmware must (``docs/protocol.md``):
it sends a ``hello``, then samples frames in the hello's int16 ADC units,
keeps every frame until an acknowledgement covers it, reconnects with
exponential backoff and jitter when the connection drops, and resends what
was not acknowledged, in order and with the original boundaries, paced
below the server's rate limit. Frames are produced on the record's own
clock (``speed`` times real time), whether connected or not, so an outage
fills the local buffer as it would on a device; when the buffer overflows,
the oldest frames are dropped and become a permanent gap.

Replayed data is labelled as such wherever it appears: the device is named
``replay-<database>-<record>``, its patient ``MIT-BIH <record> (replay)``,
the hello's ``firmware`` starts with ``replay:`` (stored with the recording
session; :func:`is_replay_hello`) and carries ``"replay": true`` and
``"record"`` (extra keys that protocol-1 servers ignore). Simulated SpO2,
pulse and temperature are declared in the hello's ``sensors`` as
``simulated:<name>`` (:func:`simulated_sensors`) and each vitals frame
carries ``"simulated": true``.

Optional noise comes from the MIT-BIH Noise Stress Test Database
(``ma``: muscle artefact, ``bw``: baseline wander), scaled to a signal-to-
noise ratio defined as in the NSTDB's ``nst`` program: signal power from
the QRS peak-to-peak amplitude ``pp`` of the annotated beats (``pp**2 / 8``,
the power of a sine of that peak-to-peak amplitude), noise power the mean
square of the noise after removing its mean (:func:`sigproc.noise.scale_noise`).

References
----------
.. [1] Moody GB, Muldrow WE, Mark RG. A noise stress test for arrhythmia
   detectors. Computers in Cardiology 11:381-384, 1984.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import ssl
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import wfdb
from sqlalchemy import select
from sqlalchemy.orm import Session
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ingest.processing import StoredBlock
from ingest.protocol import (
    Ack,
    CloseCode,
    Error,
    Hello,
    Samples,
    TokenBucket,
    Vitals,
    encode_binary_samples,
    encode_text_frame,
    parse_text_frame,
)
from ingest.tls import client_ssl_context
from sigproc.noise import nstdb_noise
from sigproc.records import MITDB_RECORDS, load_record, resolve_database_dir
from storage import Database, Device, Patient, append_audit, create_device, hash_token

__all__ = [
    "NOISE_TYPES",
    "REPLAY_FIRMWARE_PREFIX",
    "SIMULATED_SENSOR_PREFIX",
    "ReplayDevice",
    "ReplayDeviceRevokedError",
    "ReplayError",
    "ReplayResult",
    "ReplaySignal",
    "ensure_replay_devices",
    "ingest_url",
    "is_replay_hello",
    "load_replay_signal",
    "replay_device_id",
    "resolve_records",
    "run_replay",
    "simulated_sensors",
]

logger = logging.getLogger(__name__)

#: ``firmware`` of a replay device's hello starts with this.
REPLAY_FIRMWARE_PREFIX = "replay:"

#: A hello sensor named ``simulated:<name>`` declares that ``<name>`` is simulated.
SIMULATED_SENSOR_PREFIX = "simulated:"

#: NSTDB noise records that can be mixed in: muscle artefact, baseline wander.
NOISE_TYPES: tuple[str, ...] = ("ma", "bw")

NoiseType = Literal["ma", "bw"]

#: Close codes after which reconnecting cannot help.
_FATAL_CODES = frozenset(
    {
        CloseCode.UNSUPPORTED_DATA,
        CloseCode.INVALID_DATA,
        CloseCode.POLICY_VIOLATION,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.UNKNOWN_TOKEN,
        CloseCode.REPLACED,
    }
)
_INT16 = np.iinfo(np.int16)
_ABNORMAL_CLOSURE = 1006  # no close frame: the connection dropped


class ReplayError(Exception):
    """A replay device stopped for good (refused token, protocol error, too many reconnects)."""


class ReplayDeviceRevokedError(ReplayError):
    """A replay device was revoked by an administrator; it is not re-enabled silently."""


def is_replay_hello(hello: Hello) -> bool:
    """Whether a hello comes from a replay device (its firmware says so)."""
    return hello.firmware.startswith(REPLAY_FIRMWARE_PREFIX)


def simulated_sensors(hello: Hello) -> frozenset[str]:
    """The sensors a hello declares simulated (``simulated:<name>``)."""
    n = len(SIMULATED_SENSOR_PREFIX)
    return frozenset(s[n:] for s in hello.sensors if s.startswith(SIMULATED_SENSOR_PREFIX))


def replay_device_id(record: str, database: str = "mitdb") -> str:
    """Device id of the replay device of a record: ``replay-mitdb-100``."""
    return f"replay-{database}-{record}"


def resolve_records(spec: str | Sequence[str]) -> list[str]:
    """Record names from ``"100,208"``, ``"all"`` or a sequence of names.

    Raises
    ------
    ValueError
        For an empty list or a name that is not a MIT-BIH record.
    """
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
    if names == ["all"]:
        return list(MITDB_RECORDS)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in MITDB_RECORDS]
    if not names or unknown:
        raise ValueError(f"`records` must name MIT-BIH records or be 'all', got {spec!r}")
    return list(dict.fromkeys(names))


def ingest_url(server_url: str) -> str:
    """The ``/ingest`` URL of a server given as ``ws://host:port`` (or already with the path)."""
    url = server_url.rstrip("/")
    return url if url.endswith("/ingest") else f"{url}/ingest"


# Signals ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ReplaySignal:
    """A record (segment) in the ADC units a device sends.

    Attributes
    ----------
    record, database : str
        Where it comes from.
    fs : float
        Sampling rate in Hz.
    leads : tuple of str
        Lead names.
    gain, baseline : float, int
        ``mV = (count - baseline) / gain``, from the record's header.
    samples : ndarray of int16, shape (n_samples, n_leads)
        ADC counts (with the noise, if any, mixed in before quantisation).
    beats : ndarray of int64
        Sample indices of the annotated beats (for the simulated pulse).
    noise : str or None
        The NSTDB noise mixed in, and ``snr_db`` its level.
    """

    record: str
    database: str
    fs: float
    leads: tuple[str, ...]
    gain: float
    baseline: int
    samples: npt.NDArray[np.int16]
    beats: npt.NDArray[np.int64]
    noise: str | None = None
    snr_db: float | None = None

    @property
    def n_samples(self) -> int:
        """Samples per lead."""
        return int(self.samples.shape[0])

    def stored_block(
        self,
        first: int,
        n: int,
        *,
        session_id: int,
        patient_id: int | None,
        started_at: datetime,
        replay: bool = False,
    ) -> StoredBlock:
        """Samples ``first`` to ``first + n`` (fewer at the end) as storage hands them to the analysis.

        Parameters
        ----------
        first, n : int
            The frame's first sample (its sequence number) and its length in samples.
        session_id, patient_id, started_at, replay
            The stream it is placed in (see :class:`ingest.processing.StoredBlock`).
        """
        return StoredBlock(
            samples=self.samples[first : first + n],
            fs=self.fs,
            lead_names=self.leads,
            gain=self.gain,
            baseline=self.baseline,
            first_seq=first,
            session_id=session_id,
            patient_id=patient_id,
            started_at=started_at,
            replay=replay,
        )


def load_replay_signal(
    record: str,
    *,
    data_dir: str | Path | None = None,
    database: str = "mitdb",
    start_s: float = 0.0,
    seconds: float | None = None,
    noise: NoiseType | None = None,
    snr_db: float = 6.0,
) -> ReplaySignal:
    """Read a record (segment) and convert it to int16 ADC counts.

    Parameters
    ----------
    record : str
        Record name, e.g. ``"100"``.
    data_dir : path, optional
        Folder holding ``mitdb/`` (and ``nstdb/`` for noise).
    database : str
        Database folder.
    start_s, seconds : float
        Segment start and length in seconds (default: to the end).
    noise : {"ma", "bw"}, optional
        NSTDB noise to mix in, lead ``i`` with noise channel ``i % 2``.
    snr_db : float
        Signal-to-noise ratio of the mixture (see :func:`sigproc.noise.scale_noise`).

    Returns
    -------
    ReplaySignal
        Counts are ``round(mV * gain + baseline)`` with the header's gain
        and baseline of the first lead, clipped to int16; without noise
        they are the record's own ADC values.

    Raises
    ------
    ValueError
        For a negative start, a non-positive length, an unknown noise type,
        or a record whose leads have different gains or baselines.
    """
    if start_s < 0 or (seconds is not None and seconds <= 0):
        raise ValueError(f"`start_s` must be >= 0 and `seconds` positive, got {start_s}, {seconds}")
    if noise is not None and noise not in NOISE_TYPES:
        raise ValueError(f"`noise` must be one of {', '.join(NOISE_TYPES)}, got {noise!r}")
    folder = resolve_database_dir(database, data_dir, record=record)
    header = wfdb.rdheader(str(folder / record))
    fs = float(header.fs)
    gains, baselines = [float(g) for g in header.adc_gain], [int(b) for b in header.baseline]
    if len(set(gains)) != 1 or len(set(baselines)) != 1:
        raise ValueError(f"record {record} has per-lead gains {gains} / baselines {baselines}; one is needed")
    sampfrom = round(start_s * fs)
    sampto = None if seconds is None else min(sampfrom + round(seconds * fs), int(header.sig_len))
    rec = load_record(record, database, folder.parent, sampfrom=sampfrom, sampto=sampto)
    beats = rec.annotations.beats().sample if rec.annotations is not None else np.zeros(0, np.int64)
    signal = rec.signal
    if noise is not None:
        signal = signal + nstdb_noise(noise, signal, beats, fs, snr_db, folder.parent, offset=sampfrom)
    counts = np.round(np.nan_to_num(signal, nan=0.0) * gains[0] + baselines[0])
    return ReplaySignal(
        record=record,
        database=database,
        fs=fs,
        leads=rec.leads,
        gain=gains[0],
        baseline=baselines[0],
        samples=np.clip(counts, _INT16.min, _INT16.max).astype(np.int16),
        beats=np.asarray(beats, dtype=np.int64),
        noise=noise,
        snr_db=snr_db if noise is not None else None,
    )


# Devices -----------------------------------------------------------------------------


@dataclass
class ReplayResult:
    """What a replay device did.

    Attributes
    ----------
    record, device_id, stream_id : str
        Which stream.
    samples : int
        Samples per lead in the replayed signal.
    frames : int
        Frames produced.
    frames_sent, frames_resent : int
        Frames sent, and how many of them were resends after a reconnect.
    reconnects : int
        Connections after the first.
    dropped_frames : int
        Frames lost to buffer overflow (permanent gaps).
    acked : bool
        Whether every frame kept was acknowledged.
    close_codes : list of int
        Close codes of the connections that ended early.
    """

    record: str
    device_id: str
    stream_id: str
    samples: int
    frames: int = 0
    frames_sent: int = 0
    frames_resent: int = 0
    reconnects: int = 0
    dropped_frames: int = 0
    acked: bool = False
    close_codes: list[int] = field(default_factory=list)


class ReplayDevice:
    """An async device client that streams one :class:`ReplaySignal`.

    Parameters
    ----------
    signal : ReplaySignal
        What to send.
    url : str
        The server's ``/ingest`` URL.
    token : str
        The device's token (see :func:`ensure_replay_devices`).
    device_id, stream_id : str, optional
        Default ``replay-<database>-<record>`` and a fresh random stream.
    speed : float
        Multiple of real time; 0 sends as fast as acknowledgements allow.
    frame_s : float
        Signal per frame in seconds (0.25 s: 90 samples at 360 Hz).
    binary : bool
        Send binary samples frames (else JSON).
    vitals_every_s : float
        Simulated vitals every so many seconds of signal; 0 for none.
    window_frames : int
        Frames sent but not yet acknowledged, at most (also how far the
        producer runs ahead at speed 0).
    max_buffer_frames : int
        Unacknowledged frames kept; older ones are dropped (a gap).
    max_fps, burst_frames : float, int
        Client-side pacing, below the server's 50 frames/s and burst of 500.
    backoff_s, backoff_max_s : float
        First and largest reconnect delay; each try doubles the delay and
        waits a random 50-100 % of it (jitter).
    max_reconnects : int, optional
        Give up (:class:`ReplayError`) after this many reconnects in a row
        without a successful hello.
    seed : int
        Seeds the jitter and the simulated vitals.
    ssl_context : ssl.SSLContext, optional
        TLS settings of a ``wss://`` URL (e.g.
        :func:`ingest.tls.client_ssl_context` with a CA file for a
        self-signed server); default: verify against the system's trust
        store. A certificate that fails verification stops the device
        (:class:`ReplayError`) instead of being retried.
    """

    def __init__(
        self,
        signal: ReplaySignal,
        url: str,
        token: str,
        *,
        device_id: str | None = None,
        stream_id: str | None = None,
        speed: float = 1.0,
        frame_s: float = 0.25,
        binary: bool = True,
        vitals_every_s: float = 5.0,
        window_frames: int = 32,
        max_buffer_frames: int = 14_400,
        max_fps: float = 40.0,
        burst_frames: int = 400,
        backoff_s: float = 0.2,
        backoff_max_s: float = 10.0,
        max_reconnects: int | None = None,
        open_timeout_s: float = 5.0,
        seed: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if speed < 0 or frame_s <= 0 or window_frames < 1 or max_buffer_frames < window_frames:
            raise ValueError(
                "`speed` must be >= 0, `frame_s` positive, `window_frames` >= 1 and "
                "`max_buffer_frames` >= `window_frames`"
            )
        secure = url.lower().startswith("wss://")
        if ssl_context is not None and not secure:
            raise ValueError(f"`ssl_context` needs a wss:// URL, got {url!r}")
        self.signal = signal
        self.url = url
        self.ssl_context = (ssl_context or client_ssl_context()) if secure else None
        self.token = token
        self.device_id = device_id or replay_device_id(signal.record, signal.database)
        self.stream_id = stream_id or f"{signal.record}-{uuid.uuid4().hex[:12]}"
        self.speed = speed
        self.frame_samples = max(1, min(4096, round(frame_s * signal.fs)))
        self.binary = binary
        self.vitals_every_s = vitals_every_s
        self.window_frames = window_frames
        self.max_buffer_frames = max_buffer_frames
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.max_reconnects = max_reconnects
        self.open_timeout_s = open_timeout_s
        self.result = ReplayResult(signal.record, self.device_id, self.stream_id, signal.n_samples)
        self._rng = random.Random(seed)
        self._bucket = TokenBucket(max_fps, burst_frames)
        self._buffer: OrderedDict[int, Samples] = OrderedDict()
        self._send_queue: deque[int] = deque()
        self._ever_sent: set[int] = set()
        self._inflight: set[int] = set()
        self._vitals: deque[Vitals] = deque(maxlen=16)
        self._next_frame = 0
        self._changed = asyncio.Event()

    @property
    def n_frames(self) -> int:
        """Frames the whole signal makes."""
        return -(-self.signal.n_samples // self.frame_samples)

    @property
    def finished(self) -> bool:
        """Every frame produced and none left unacknowledged."""
        return self._next_frame >= self.n_frames and not self._buffer

    def hello(self) -> str:
        """The hello text: the record's description, labelled as a replay."""
        sig = self.signal
        sensors: tuple[str, ...] = ()
        if self.vitals_every_s > 0:
            names = ("spo2", "pulse", "temperature")
            sensors = names + tuple(SIMULATED_SENSOR_PREFIX + n for n in names)
        hello = Hello(
            token=self.token,
            device_id=self.device_id,
            stream_id=self.stream_id,
            fs=sig.fs,
            leads=sig.leads,
            gain=sig.gain,
            units="mV",
            baseline=sig.baseline,
            firmware=f"{REPLAY_FIRMWARE_PREFIX}{sig.database}/{sig.record}"[:64],
            sensors=sensors,
        )
        return _with_keys(encode_text_frame(hello), replay=True, record=f"{sig.database}/{sig.record}")

    async def run(self) -> ReplayResult:
        """Stream the whole signal, reconnecting as needed, until every frame is acknowledged.

        Raises
        ------
        ReplayError
            After a close code that reconnecting cannot fix (4001 unknown
            token, protocol violations, 4003 replaced) or too many failed
            reconnects.
        """
        producer = asyncio.create_task(self._produce())
        try:
            await self._connect_until_done()
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
        self.result.acked = self.finished
        return self.result

    async def _connect_until_done(self) -> None:
        """Connect, stream, and reconnect with backoff until finished."""
        failures = 0
        while not self.finished:
            code, greeted = await self._connect_once()
            if self.finished:
                return
            if code is not None:
                self.result.close_codes.append(code)
                if code in _FATAL_CODES:
                    raise ReplayError(f"{self.device_id}: the server closed with {code}; not retrying")
            failures = 1 if greeted else failures + 1
            if self.max_reconnects is not None and failures > self.max_reconnects:
                raise ReplayError(f"{self.device_id}: gave up after {failures} failed connection attempts")
            await asyncio.sleep(self._backoff(failures))
            self.result.reconnects += 1

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with jitter: 50-100 % of ``backoff_s * 2**(failures - 1)``, capped."""
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** max(failures - 1, 0))
        return delay * (0.5 + 0.5 * self._rng.random())

    async def _connect_once(self) -> tuple[int | None, bool]:
        """One connection: its close code (``None`` if it never opened) and whether the hello was answered."""
        greeted = False
        tls: dict[str, Any] = {"ssl": self.ssl_context} if self.ssl_context is not None else {}
        try:
            async with connect(
                self.url, open_timeout=self.open_timeout_s, compression=None, close_timeout=2.0, **tls
            ) as ws:
                try:
                    await self._greet(ws)
                    greeted = True
                    await self._stream(ws)
                except ConnectionClosed:
                    pass  # the close code is read below
                if self.finished:
                    await ws.close(CloseCode.NORMAL, "replay finished")
                    return None, greeted
                await ws.wait_closed()
                return ws.close_code or _ABNORMAL_CLOSURE, greeted
        except ssl.SSLCertVerificationError as exc:
            # Retrying cannot make an untrusted certificate trusted; never fall back to plain text.
            raise ReplayError(
                f"{self.device_id}: the certificate of {self.url} is not trusted ({exc.verify_message}); "
                "give the server's CA (or its self-signed certificate) as the CA file"
            ) from exc
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            logger.info("%s: connection to %s failed: %s", self.device_id, self.url, exc)
            return None, greeted

    async def _greet(self, ws: ClientConnection) -> None:
        """Send the hello; apply the server's first ack (what it already stored)."""
        await ws.send(self.hello())
        async with asyncio.timeout(self.open_timeout_s):
            first = await ws.recv()
        self._handle_server_frame(first)
        self._inflight.clear()
        self._send_queue = deque(self._buffer)  # resend everything unacknowledged, in order

    async def _stream(self, ws: ClientConnection) -> None:
        """Send frames and read acks until finished or the connection ends."""
        receiver = asyncio.create_task(self._receive(ws))
        sender = asyncio.create_task(self._send(ws))
        try:
            await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            if sender.done() and not isinstance(sender.exception(), ConnectionClosed):
                receiver.cancel()
                sender.result()  # finished (or a bug, re-raised)
            else:
                # The connection is closing: the receiver ends by itself once it has
                # applied every ack the server sent before its close frame.
                sender.cancel()
                await receiver
        finally:
            for task in (receiver, sender):
                task.cancel()
            await asyncio.gather(receiver, sender, return_exceptions=True)

    async def _receive(self, ws: ClientConnection) -> None:
        """Apply every ack the server sends."""
        async for message in ws:
            self._handle_server_frame(message)

    def _handle_server_frame(self, message: str | bytes) -> None:
        """Drop acknowledged frames; log an error frame (the close follows)."""
        if isinstance(message, bytes):
            raise ReplayError(f"{self.device_id}: the server sent a binary frame")
        frame = parse_text_frame(message)
        if isinstance(frame, Ack):
            self._apply_ack(frame)
        elif isinstance(frame, Error):
            logger.warning("%s: server error %d: %s", self.device_id, frame.code, frame.reason)

    def _apply_ack(self, ack: Ack) -> None:
        """Forget frames covered by ``upto`` or a range."""
        while self._buffer:
            seq, frame = next(iter(self._buffer.items()))
            if frame.end_seq > ack.upto:
                break
            self._forget(seq)
        for start, end in ack.ranges:
            first = start + (-start % self.frame_samples)  # frames start at multiples of frame_samples
            for seq in range(first, end, self.frame_samples):
                held = self._buffer.get(seq)
                if held is not None and held.end_seq <= end:
                    self._forget(seq)
        self._changed.set()

    def _forget(self, seq: int) -> None:
        del self._buffer[seq]
        self._inflight.discard(seq)

    async def _send(self, ws: ClientConnection) -> None:
        """Send queued frames within the window and the pacing; end when all are acknowledged."""
        while not self.finished:
            if self._vitals:
                await self._paced_send(
                    ws, _with_keys(encode_text_frame(self._vitals.popleft()), simulated=True)
                )
                continue
            seq = self._next_to_send()
            if seq is None or len(self._inflight) >= self.window_frames:
                self._changed.clear()
                await self._changed.wait()
                continue
            frame = self._buffer[seq]
            self._inflight.add(seq)
            if seq in self._ever_sent:
                self.result.frames_resent += 1
            self._ever_sent.add(seq)
            self.result.frames_sent += 1
            await self._paced_send(
                ws, encode_binary_samples(frame) if self.binary else encode_text_frame(frame)
            )

    def _next_to_send(self) -> int | None:
        """The next buffered frame not yet sent on this connection."""
        while self._send_queue:
            seq = self._send_queue[0]
            if seq in self._buffer:
                return self._send_queue.popleft()
            self._send_queue.popleft()  # acknowledged or dropped meanwhile
        return None

    async def _paced_send(self, ws: ClientConnection, data: str | bytes) -> None:
        """Send one frame, first waiting for a token of the client-side rate limit."""
        while not self._bucket.consume(time.monotonic()):
            await asyncio.sleep(1.0 / self._bucket.rate)
        await ws.send(data)

    async def _produce(self) -> None:
        """Cut the signal into frames on the record's clock (or as acks allow at speed 0)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        vitals_every = round(self.vitals_every_s * self.signal.fs) if self.vitals_every_s > 0 else 0
        next_vitals = vitals_every
        n = self.frame_samples
        while self._next_frame < self.n_frames:
            seq = self._next_frame * n
            end = min(seq + n, self.signal.n_samples)
            if self.speed > 0:
                await asyncio.sleep(max(0.0, start + end / self.signal.fs / self.speed - loop.time()))
            else:
                while len(self._buffer) >= self.window_frames:
                    self._changed.clear()
                    await self._changed.wait()
            self._add_frame(Samples(seq=seq, samples=self.signal.samples[seq:end]))
            if vitals_every and end >= next_vitals:
                self._vitals.append(self._simulated_vitals(end))  # the newest 16 wait for a connection
                next_vitals += vitals_every
            self._changed.set()

    def _add_frame(self, frame: Samples) -> None:
        """Buffer a new frame, dropping the oldest when the buffer is full."""
        if len(self._buffer) >= self.max_buffer_frames:
            oldest = next(iter(self._buffer))
            self._forget(oldest)
            self.result.dropped_frames += 1
        self._buffer[frame.seq] = frame
        self._send_queue.append(frame.seq)
        self._next_frame += 1
        self.result.frames += 1

    def _simulated_vitals(self, seq: int) -> Vitals:
        """Plausible SpO2 and temperature, and the pulse from the record's own beats."""
        beats = self.signal.beats[
            (self.signal.beats < seq) & (self.signal.beats >= seq - 10 * self.signal.fs)
        ]
        pulse = 60.0 * self.signal.fs / float(np.median(np.diff(beats))) if beats.size > 2 else None
        return Vitals(
            seq=seq,
            spo2=round(min(100.0, 97.0 + self._rng.gauss(0.0, 0.6)), 1),
            pulse=round(min(pulse, 350.0), 1) if pulse is not None else None,
            temperature=round(36.8 + self._rng.gauss(0.0, 0.05), 2),
        )


# Registration and orchestration ------------------------------------------------------


def ensure_replay_devices(db: Database, records: Sequence[str], *, database: str = "mitdb") -> dict[str, str]:
    """Register (or re-key) a replay device and its patient for each record.

    A missing patient (``MIT-BIH <record> (replay)``, MRN
    ``REPLAY-MITDB-<record>``) and device (``replay-mitdb-<record>``) are
    created. Every call generates a fresh token per device and stores only
    its hash, so tokens from an earlier call stop working: call it in the
    process that runs the replay.

    Returns
    -------
    dict
        ``{record: token}``.

    Raises
    ------
    ReplayDeviceRevokedError
        If an administrator revoked one of the replay devices.
    """
    tokens: dict[str, str] = {}
    with db.session() as session:
        for record in records:
            uid = replay_device_id(record, database)
            token = secrets.token_urlsafe(32)
            device = session.scalar(select(Device).where(Device.device_uid == uid))
            if device is None:
                patient = _replay_patient(session, record, database)
                device = create_device(session, uid, token, patient_id=patient.id)
                device.firmware = f"{REPLAY_FIRMWARE_PREFIX}{database}/{record}"
                action = "device.register"
            elif device.revoked_at is not None:
                raise ReplayDeviceRevokedError(f"replay device {uid} is revoked; an administrator revoked it")
            else:
                device.token_hash = hash_token(token)
                action = "device.rotate_token"
            append_audit(session, "system:replay", action, target=f"device:{uid}", details={"replay": True})
            tokens[record] = token
    return tokens


def _replay_patient(session: Session, record: str, database: str) -> Patient:
    """The replay patient of a record, created when missing."""
    mrn = f"REPLAY-{database.upper()}-{record}"
    patient = session.scalar(select(Patient).where(Patient.mrn == mrn))
    if patient is None:
        patient = Patient(name=f"{'MIT-BIH' if database == 'mitdb' else database} {record} (replay)", mrn=mrn)
        session.add(patient)
        session.flush()
    return patient


async def run_replay(
    records: str | Sequence[str],
    server_url: str,
    tokens: Mapping[str, str],
    *,
    speed: float = 1.0,
    noise: NoiseType | None = None,
    snr_db: float = 6.0,
    data_dir: str | Path | None = None,
    start_s: float = 0.0,
    seconds: float | None = None,
    stream_ids: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    **device_options: Any,
) -> list[ReplayResult]:
    """Replay records concurrently, one device each, until all are acknowledged.

    Parameters
    ----------
    records : str or sequence of str
        ``"100,208"``, ``"all"`` or names.
    server_url : str
        ``ws://host:port`` or ``wss://host:port`` (``/ingest`` is appended
        when missing).
    tokens : mapping
        ``{record: token}`` from :func:`ensure_replay_devices`.
    speed : float
        Multiple of real time (0: as fast as acknowledgements allow).
    noise, snr_db : optional
        NSTDB noise (``"ma"`` or ``"bw"``) and its SNR in dB.
    data_dir : path, optional
        Folder holding ``mitdb/`` and ``nstdb/``.
    start_s, seconds : float
        The segment of each record to replay.
    stream_ids : mapping, optional
        ``{record: stream_id}`` to resume earlier streams.
    ssl_context : ssl.SSLContext, optional
        TLS settings of a ``wss://`` server (see :class:`ReplayDevice`).
    **device_options
        Passed to :class:`ReplayDevice` (``frame_s``, ``binary``,
        ``vitals_every_s``, ``window_frames``, ...).

    Raises
    ------
    ReplayError
        If a device stops for good (the other devices are cancelled).
    KeyError
        If a record has no token.
    """
    names = resolve_records(records)
    missing = [r for r in names if r not in tokens]
    if missing:
        raise KeyError(f"no device token for record(s) {missing}")
    url = ingest_url(server_url)
    devices = []
    for index, record in enumerate(names):  # one at a time: a whole record is ~10 MB as float
        signal = await asyncio.to_thread(
            load_replay_signal,
            record,
            data_dir=data_dir,
            start_s=start_s,
            seconds=seconds,
            noise=noise,
            snr_db=snr_db,
        )
        stream_id = (stream_ids or {}).get(record)
        options = {"seed": index, **device_options}
        devices.append(
            ReplayDevice(
                signal,
                url,
                tokens[record],
                stream_id=stream_id,
                speed=speed,
                ssl_context=ssl_context,
                **options,
            )
        )
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(device.run()) for device in devices]
    return [task.result() for task in tasks]


def _with_keys(text: str, **extra: Any) -> str:
    """A JSON frame with extra keys (which protocol-1 servers ignore)."""
    return json.dumps({**json.loads(text), **extra}, separators=(",", ":"))
