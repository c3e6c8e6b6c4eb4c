"""The ingest and live WebSocket server: ``/ingest``, ``/live`` and ``/health`` on one port.

The rules live elsewhere and are pure: the device protocol in
:mod:`ingest.protocol`, the ``/live`` tokens in :mod:`ingest.live_tokens`,
the ``/live`` subscribe message in :func:`parse_live_request` and
:func:`live_topics` below. This module only moves data between the network,
storage, the stream processor and the fan-out.

Per device connection (:class:`IngestServer`), three tasks share a
:class:`~ingest.protocol.SequenceTracker`:

* the **reader** parses and checks each frame (``DeviceConnection``), drops
  duplicates (re-acknowledging them), and queues the rest (a bounded queue:
  a device that outruns storage is slowed by TCP flow control, not buffered
  without limit);
* the **writer** hands whatever is queued to the next storage round and
  acknowledges it only after that round's commit, so an acknowledged
  sample is never lost; a batch that fails is not stored at all, and its
  connection closes with 1011 (the device resends);
* the **analyst** hands each stored block to the
  :class:`~ingest.processing.StreamProcessor` in another worker thread and
  publishes the events it returns.

When the processor has a ``tick`` method (:class:`~ingest.processing.TickingProcessor`,
e.g. :class:`~ingest.pipeline.AnalysisProcessor`), one more task, the
**ticker**, calls it about once a second in the processor's worker thread
and publishes its events: that is how a device gone silent (connected or
not) raises its alarm, and how acknowledgements made in the dashboard reach
the alarm engines.

Database work runs in a dedicated thread pool (one thread for SQLite, whose
writers queue for one lock anyway; a few for PostgreSQL) and the processor
in another, so neither ever blocks the event loop. Storage goes in
**rounds**: one round stores the batches of every stream that has one
waiting, in one transaction (chunks by :func:`storage.insert_chunks`: one
overlap query and one multi-row insert per stream; each device's
``last_seen_at`` at most once a second, battery and RSSI whenever
reported), so the cost per frame falls as the number of streams grows. If
a round fails on one stream's data, nothing of it is kept and each batch
is stored again in a transaction of its own: only the stream at fault gets
the error. Each device is served independently: a bad frame closes only
its own connection.

Per-message compression (``compression``, default ``"deflate"``) is
negotiated with the clients that offer it; ``compression=None`` turns it
off, which saves this process a little CPU per message and per browser
(about 1 % of a core for one central view of 100 streams).

Shutdown (:meth:`IngestServer.stop`, SIGTERM in :func:`run_server`) stops
reading, stores and acknowledges what was already received, then closes
every connection with 1001 (going away); devices reconnect and resend the
rest elsewhere or later.

Given a TLS context (:mod:`ingest.tls`; ``ServeOptions.certfile`` and
``keyfile``), the same endpoints are served as ``wss://`` and ``https://``
only: a plain ``ws://`` client fails the TLS handshake.

``/live`` protocol (browser side): connect, send ``{"type": "subscribe",
"token": ..., "view": "patient", "patient_id": 12}`` or ``{"type":
"subscribe", "token": ..., "view": "central"}`` (optionally with
``"patient_ids"``), receive ``{"type": "subscribed", ...}`` and then the
events. Close codes: 4401 missing, forged or expired token; 4403 a patient
outside the token's scope; 1007 a malformed subscribe message; 1008 no
subscribe message first or in time; 1013 the client reads too slowly; 1001
the server shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import secrets
import signal
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import numpy.typing as npt
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session
from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ingest.fanout import (
    FanOut,
    InMemoryFanOut,
    RedisFanOut,
    SlowSubscriberError,
    Subscription,
    central_topic,
    patient_topic,
)
from ingest.live_tokens import LiveClaims, LiveTokenError, live_secret_key, verify_live_token
from ingest.processing import DisplayProcessor, LiveEvent, StoredBlock, StreamProcessor, VitalsReading
from ingest.protocol import (
    DEFAULT_LIMITS,
    Ack,
    AuthenticationError,
    CloseCode,
    DeviceConnection,
    Hello,
    ProtocolError,
    ProtocolLimits,
    Samples,
    SeqKind,
    SequenceTracker,
    Vitals,
    check_resume,
    encode_text_frame,
    error_frame,
)
from ingest.replay import ensure_replay_devices, is_replay_hello, run_replay, simulated_sensors
from ingest.tls import pinned_ssl_context, server_ssl_context
from storage import (
    ChunkLayout,
    CodecError,
    Database,
    Device,
    RecordingSession,
    StorageError,
    add_vitals,
    chunk_time,
    device_for_token,
    insert_chunks,
    open_recording,
    stored_ranges,
    update_device_status,
    update_device_status_by_id,
    upgrade,
    utcnow,
)

__all__ = [
    "LIVE_SECRET_ENV",
    "ConnectionReplacedError",
    "IngestServer",
    "LiveCloseCode",
    "LiveForbiddenError",
    "LiveRequest",
    "LiveRequestError",
    "LiveUnauthorizedError",
    "MalformedLiveRequestError",
    "ServeOptions",
    "StorageUnavailableError",
    "live_topics",
    "parse_live_request",
    "run_server",
    "serve",
]

logger = logging.getLogger(__name__)

#: Environment variable holding the secret shared with the dashboard for ``/live`` tokens.
LIVE_SECRET_ENV = "CARDIAC_MONITOR_LIVE_SECRET"

#: Largest message websockets itself accepts, as a multiple of the protocol's
#: frame limit: frames between the two get the protocol's ``error`` frame and
#: 1009; larger ones are refused by websockets (also 1009, without the frame).
_WIRE_LIMIT_FACTOR = 4

#: Most often a device's ``last_seen_at`` is written while it streams, in seconds.
_STATUS_INTERVAL_S = 1.0

#: Errors of storing a batch that close the device's connection with 1011.
_STORAGE_ERRORS = (SQLAlchemyError, StorageError, CodecError, ValueError)

#: Errors that one stream's data can cause (the others of its round are then stored again without it).
_DATA_ERRORS = (IntegrityError, DataError, StorageError, CodecError, ValueError)

_T = TypeVar("_T")


# Errors ----------------------------------------------------------------------------------


class StorageUnavailableError(ProtocolError):
    """Storage failed, so the frames were not stored; the device reconnects and resends (1011)."""

    close_code = CloseCode.INTERNAL_ERROR


class ConnectionReplacedError(ProtocolError):
    """The same device opened a newer connection (4003)."""

    close_code = CloseCode.REPLACED


# /live requests (pure) -----------------------------------------------------------


class LiveCloseCode(IntEnum):
    """Close codes of ``/live`` connections."""

    NORMAL = 1000
    GOING_AWAY = 1001
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    TRY_AGAIN_LATER = 1013
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403


class LiveRequestError(Exception):
    """A ``/live`` client is refused; the connection closes with ``close_code``."""

    close_code: ClassVar[LiveCloseCode] = LiveCloseCode.POLICY_VIOLATION


class MalformedLiveRequestError(LiveRequestError):
    """The subscribe message is not valid JSON of the expected shape."""

    close_code = LiveCloseCode.INVALID_DATA


class LiveUnauthorizedError(LiveRequestError):
    """The token is missing, forged or expired."""

    close_code = LiveCloseCode.UNAUTHORIZED


class LiveForbiddenError(LiveRequestError):
    """A requested patient is outside the token's scope."""

    close_code = LiveCloseCode.FORBIDDEN


@dataclass(frozen=True)
class LiveRequest:
    """A browser's subscribe message.

    Attributes
    ----------
    token : str
        The signed live token (checked later, by :func:`verify_live_token`).
    view : {"patient", "central"}
        One patient's full view, or the decimated overview.
    patient_ids : tuple of int
        The patients asked for; empty for the central view means every
        patient in the token's scope.
    """

    token: str = field(repr=False)
    view: str
    patient_ids: tuple[int, ...]


def parse_live_request(message: str | bytes) -> LiveRequest:
    """Parse the first message of a ``/live`` connection.

    Raises
    ------
    MalformedLiveRequestError
        Binary or invalid JSON, wrong types, an unknown view, no patient for
        the patient view.
    LiveRequestError
        The message is not a ``subscribe`` (policy violation, 1008).
    """
    if isinstance(message, bytes):
        raise MalformedLiveRequestError("send the subscribe message as JSON text")
    try:
        obj = json.loads(message)
    except ValueError as exc:
        raise MalformedLiveRequestError(f"invalid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise MalformedLiveRequestError("the subscribe message must be a JSON object")
    if obj.get("type") != "subscribe":
        raise LiveRequestError(f"the first message must be a subscribe, got type {obj.get('type')!r}")
    token = obj.get("token", "")
    view = obj.get("view", "patient")
    if not isinstance(token, str):
        raise MalformedLiveRequestError("`token` must be a string")
    if view not in ("patient", "central"):
        raise MalformedLiveRequestError(f"`view` must be 'patient' or 'central', got {view!r}")
    ids = obj.get("patient_ids", [])
    if obj.get("patient_id") is not None:
        ids = [obj["patient_id"], *ids] if isinstance(ids, list) else ids
    if not isinstance(ids, list) or not all(type(i) is int and i >= 0 for i in ids):
        raise MalformedLiveRequestError("`patient_id` / `patient_ids` must be non-negative integers")
    if view == "patient" and not ids:
        raise MalformedLiveRequestError("the patient view needs `patient_id`")
    return LiveRequest(token=token, view=view, patient_ids=tuple(dict.fromkeys(ids)))


def live_topics(request: LiveRequest, claims: LiveClaims) -> list[str]:
    """The fan-out topics a verified request may subscribe to.

    Raises
    ------
    LiveForbiddenError
        If a requested patient is outside the token's scope, or the scope
        is empty.
    """
    outside = [p for p in request.patient_ids if not claims.allows(p)]
    if outside:
        raise LiveForbiddenError(f"patient(s) {outside} are outside this token's scope")
    patients = request.patient_ids or tuple(sorted(claims.patient_ids))
    if not patients:
        raise LiveForbiddenError("this token allows no patients")
    topic = patient_topic if request.view == "patient" else central_topic
    return [topic(p) for p in patients]


# Streams ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _StreamInfo:
    """What the writer and analyst need to know about a stream (no ORM objects)."""

    device_pk: int
    device_uid: str
    stream_id: str
    session_id: int
    patient_id: int | None
    fs: float
    leads: tuple[str, ...]
    gain: float
    baseline: int
    started_at: datetime
    replay: bool
    simulated: frozenset[str]

    @functools.cached_property
    def layout(self) -> ChunkLayout:
        """The recording session as :func:`storage.insert_chunks` needs it (built once per stream)."""
        return _Layout(self.session_id, self.fs, self.leads, self.gain, self.baseline, self.started_at)


@dataclass(frozen=True)
class _Layout:
    """A :class:`~storage.ChunkLayout` copied from a stream's info."""

    id: int
    fs: float
    lead_names: tuple[str, ...]
    gain: float
    baseline: int
    started_at: datetime


@dataclass(frozen=True, eq=False)
class _StoreRequest:
    """A stream's batch waiting for the next storage round; ``done`` resolves after its commit."""

    info: _StreamInfo
    batch: Sequence[_Pending]
    done: asyncio.Future[None]


@dataclass(frozen=True, eq=False)
class _Pending:
    """A checked frame waiting for storage."""

    frame: Samples | Vitals
    kind: SeqKind
    received_at: datetime


@dataclass(eq=False)
class _DeviceStream:
    """One device connection and its pipeline."""

    ws: ServerConnection
    conn: DeviceConnection
    info: _StreamInfo
    tracker: SequenceTracker
    queue: asyncio.Queue[_Pending | None]
    analysis: asyncio.Queue[StoredBlock | VitalsReading | None]
    connected_at: float
    reader: asyncio.Task[None] | None = None
    writer: asyncio.Task[None] | None = None
    analyst: asyncio.Task[None] | None = None
    failure: ProtocolError | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    pending_since: deque[float] = field(default_factory=deque)
    frames_received: int = 0
    frames_stored: int = 0
    duplicates: int = 0
    gaps_seen: int = 0
    processor_errors: int = 0

    def stop_reading(self, failure: ProtocolError | None = None) -> None:
        """Stop taking frames; remember the ``failure`` to report, unless one is already set."""
        if failure is not None and self.failure is None:
            self.failure = failure
        if self.reader is not None:
            self.reader.cancel()

    def cancel_all(self) -> None:
        """Cancel every task (the server is aborting)."""
        for task in (self.reader, self.writer, self.analyst):
            if task is not None:
                task.cancel()


class IngestServer:
    """The WebSocket server for devices (``/ingest``), browsers (``/live``) and health checks.

    Parameters
    ----------
    db : Database
        Initialised and migrated.
    live_secret : str or bytes
        Secret shared with the dashboard, which signs ``/live`` tokens
        (at least 16 bytes).
    fanout : FanOut, optional
        Where live events go (default: a new :class:`InMemoryFanOut`).
    processor : StreamProcessor, optional
        Turns stored blocks into live events (default: :class:`DisplayProcessor`).
    host, port : str, int
        Where to listen; port 0 picks a free port (see :attr:`port`).
    limits : ProtocolLimits
        Device protocol limits.
    storage_workers : int, optional
        Database threads (default: 1 for SQLite, 4 otherwise).
    max_pending_frames : int
        Frames per device waiting for storage before the server stops
        reading from that device.
    max_batch_frames : int
        Most frames stored in one transaction.
    hello_timeout_s : float
        Time a client has to send its first message.
    live_queue_size : int
        Bound of each browser's queue (see :mod:`ingest.fanout`).
    wall_clock : callable
        Seconds since the epoch (token expiry, the processor's ticks);
        injectable for tests.
    tick_interval_s : float
        Period of the processor's ``tick`` calls (where it has one).
    ssl_context : ssl.SSLContext, optional
        Serve TLS (``wss://``) with this context (see
        :func:`ingest.tls.server_ssl_context`); plain ``ws://`` clients are
        then refused at the TLS handshake.
    health_token : str, optional
        Bearer token that unlocks ``/health``'s identifiers (default
        ``$CARDIAC_MONITOR_HEALTH_TOKEN``).
    compression : {"deflate", None}
        Per-message compression accepted from clients that offer it;
        ``None`` turns it off (less CPU per message, more bytes on the wire).

    Examples
    --------
    >>> async def main(db: Database) -> None:  # doctest: +SKIP
    ...     async with IngestServer(db, live_secret="...") as server:
    ...         print(server.url)
    """

    def __init__(
        self,
        db: Database,
        *,
        live_secret: str | bytes,
        fanout: FanOut | None = None,
        processor: StreamProcessor | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: ProtocolLimits = DEFAULT_LIMITS,
        storage_workers: int | None = None,
        max_pending_frames: int = 64,
        max_batch_frames: int = 64,
        hello_timeout_s: float = 10.0,
        live_queue_size: int = 256,
        wall_clock: Callable[[], float] = time.time,
        tick_interval_s: float = 1.0,
        ssl_context: ssl.SSLContext | None = None,
        health_token: str | None = None,
        compression: str | None = "deflate",
    ) -> None:
        if compression not in (None, "deflate"):
            raise ValueError(f"`compression` must be None or 'deflate', got {compression!r}")
        if max_pending_frames < 1 or max_batch_frames < 1:
            raise ValueError("`max_pending_frames` and `max_batch_frames` must be at least 1")
        if not tick_interval_s > 0:
            raise ValueError(f"`tick_interval_s` must be positive, got {tick_interval_s}")
        self.db = db
        self.fanout: FanOut = fanout if fanout is not None else InMemoryFanOut()
        self._owns_fanout = fanout is None
        self.processor: StreamProcessor = processor if processor is not None else DisplayProcessor()
        self.host = host
        self.limits = limits
        self.max_pending_frames = max_pending_frames
        self.max_batch_frames = max_batch_frames
        self.hello_timeout_s = hello_timeout_s
        self.live_queue_size = live_queue_size
        self._live_secret = live_secret_key(live_secret)
        self._wall_clock = wall_clock
        self.tick_interval_s = tick_interval_s
        self._ticker: asyncio.Task[None] | None = None
        #: Failed ``tick`` calls of the processor (logged; the ticker carries on).
        self.tick_errors = 0
        self._requested_port = port
        self.ssl_context = ssl_context
        self.compression = compression
        # ``/health`` names devices and patients only to a caller with this token.
        self._health_token = health_token if health_token is not None else os.environ.get(HEALTH_TOKEN_ENV)
        if storage_workers is None:
            storage_workers = 1 if db.engine.dialect.name == "sqlite" else 4
        self._storage_pool = ThreadPoolExecutor(storage_workers, thread_name_prefix="ingest-db")
        self._storage_workers = storage_workers
        # Storage rounds: batches waiting for the next round, the tasks running rounds
        # (at most one per storage thread), and when each device's status was last written.
        self._store_requests: list[_StoreRequest] = []
        self._store_tasks: set[asyncio.Task[None]] = set()
        self._store_rounds = 0
        self._status_written: dict[int, float] = {}
        self._processing_pool = ThreadPoolExecutor(1, thread_name_prefix="ingest-proc")
        self._server: Server | None = None
        self._streams: dict[int, _DeviceStream] = {}
        self._live: dict[ServerConnection, Subscription] = {}
        self._stopping = False
        self._started_at = 0.0
        self.totals: dict[str, int] = dict.fromkeys(
            (
                "connections",
                "frames_received",
                "frames_stored",
                "storage_rounds",
                "duplicates",
                "gaps",
                "refused",
            ),
            0,
        )

    # Lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Start listening."""
        self._server = await ws_serve(
            self._handle,
            self.host,
            self._requested_port,
            process_request=self._process_request,
            max_size=self.limits.max_frame_bytes * _WIRE_LIMIT_FACTOR,
            ssl=self.ssl_context,
            compression=self.compression,
        )
        self._started_at = time.monotonic()
        tick = getattr(self.processor, "tick", None)
        if callable(tick):
            self._ticker = asyncio.create_task(self._tick_loop(tick), name="ingest-ticker")
        logger.info("ingest server listening on %s", self.url)

    @property
    def port(self) -> int:
        """The port listened on (the chosen one when started with port 0)."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """``ws://host:port`` of this server, ``wss://`` when it serves TLS."""
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{self.host}:{self.port}"

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful shutdown: stop reading, store and acknowledge what was received, close with 1001."""
        if self._server is None:
            return
        self._stopping = True
        self._server.server.close()  # accept no new connections
        for stream in list(self._streams.values()):
            stream.stop_reading()
        for subscription in list(self._live.values()):
            subscription.close()  # its handler then closes the connection with 1001
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(s.done.wait() for s in list(self._streams.values())))
                self._server.close(close_connections=True)
                await self._server.wait_closed()
        except TimeoutError:
            logger.warning("connections still open after %.0f s; aborting them", timeout_s)
            await self.abort()
            return
        await self._release()

    async def abort(self) -> None:
        """Crash-like stop for tests: drop every connection at once, acknowledge nothing more."""
        self._stopping = True
        for stream in list(self._streams.values()):
            stream.cancel_all()
        if self._server is not None:
            for ws in list(self._server.connections):
                ws.transport.abort()
            self._server.close(close_connections=False)
            for task in list(self._server.handler_tasks):
                task.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._server.wait_closed()
        await self._release()

    async def __aenter__(self) -> IngestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _release(self) -> None:
        """Stop the ticker, wait for the worker threads, then close what the server owns."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        loop = asyncio.get_running_loop()
        for pool in (self._storage_pool, self._processing_pool):
            await loop.run_in_executor(None, functools.partial(pool.shutdown, wait=True, cancel_futures=True))
        await asyncio.gather(*self._store_tasks, return_exceptions=True)
        if self._owns_fanout:
            await self.fanout.aclose()
        self._server = None

    # Health ----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """What ``/health`` reports: streams with their lag and queues, live clients, fan-out.

        Per stream, ``lag_s`` is the age of the oldest frame received but not
        yet stored (0 when storage keeps up), ``behind_s`` how long ago the
        last stored sample was taken (wall clock minus its sample time;
        negative for a replay faster than real time), ``queue`` the frames
        waiting for storage and ``analysis_queue`` the blocks waiting for the
        processor.
        """
        now = time.monotonic()
        wall = datetime.now(UTC)
        streams = [self._stream_health(s, now, wall) for s in self._streams.values()]
        return {
            "status": "stopping" if self._stopping else "ok",
            "uptime_s": round(now - self._started_at, 3) if self._started_at else 0.0,
            "streams": streams,
            "queues": {
                "storage": sum(s["queue"] for s in streams),
                "analysis": sum(s["analysis_queue"] for s in streams),
            },
            "live_clients": len(self._live),
            "totals": dict(self.totals),
            "fanout": self.fanout.stats(),
        }

    @staticmethod
    def _stream_health(stream: _DeviceStream, now: float, wall: datetime) -> dict[str, Any]:
        info = stream.info
        upto = stream.tracker.upto
        stored_end = max((end for _, end in stream.tracker.stored_ranges), default=0)
        last_sample = _sample_time(info, stored_end)
        return {
            "device": info.device_uid,
            "stream_id": info.stream_id,
            "session_id": info.session_id,
            "patient_id": info.patient_id,
            "replay": info.replay,
            "connected_s": round(now - stream.connected_at, 3),
            "upto": upto,
            "gaps": len(stream.tracker.gaps),
            "frames_received": stream.frames_received,
            "frames_stored": stream.frames_stored,
            "duplicates": stream.duplicates,
            "queue": len(stream.pending_since),
            "analysis_queue": stream.analysis.qsize(),
            "lag_s": round(now - stream.pending_since[0], 3) if stream.pending_since else 0.0,
            "behind_s": round((wall - last_sample).total_seconds(), 3),
            "processor_errors": stream.processor_errors,
        }

    def public_health(self, authorization: str | None = None) -> dict[str, Any]:
        """:meth:`health` as ``/health`` serves it.

        ``/health`` needs no login (load balancers and monitoring probe it), so
        without ``Authorization: Bearer <health token>`` (``$CARDIAC_MONITOR_HEALTH_TOKEN``) each stream is
        reported without the identifiers of its device, session and patient.
        """
        report = self.health()
        token = self._health_token
        if token and authorization is not None and secrets.compare_digest(authorization, f"Bearer {token}"):
            return report
        report["streams"] = [
            {k: v for k, v in s.items() if k not in _IDENTIFYING_HEALTH_KEYS} for s in report["streams"]
        ]
        return report

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Route plain HTTP: ``/health`` answers JSON; unknown paths get 404."""
        path = urlsplit(request.path).path
        if path in ("/ingest", "/live"):
            return None
        if path == "/health":
            report = self.public_health(request.headers.get("Authorization"))
            response = connection.respond(HTTPStatus.OK, json.dumps(report) + "\n")
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        return connection.respond(HTTPStatus.NOT_FOUND, f"no endpoint at {path}\n")

    # Routing ---------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        """Serve one WebSocket connection according to its path."""
        path = urlsplit(ws.request.path if ws.request is not None else "").path
        if path == "/ingest":
            await self._serve_device(ws)
        elif path == "/live":
            await self._serve_live(ws)

    # Devices ---------------------------------------------------------------------

    async def _serve_device(self, ws: ServerConnection) -> None:
        """Authenticate a device, then run its reader, writer and analyst until it ends."""
        stream = await self._open_device_stream(ws)
        if stream is None:
            return
        try:
            await self._run_stream(stream)
        finally:
            stream.cancel_all()
            if self._streams.get(stream.info.device_pk) is stream:
                del self._streams[stream.info.device_pk]
            stream.done.set()

    async def _open_device_stream(self, ws: ServerConnection) -> _DeviceStream | None:
        """Hello, token, stream: the device's handshake; ``None`` if it was refused."""
        conn = DeviceConnection(self.limits)
        try:
            async with asyncio.timeout(self.hello_timeout_s):
                message = await ws.recv()
            hello = conn.receive(message, time.monotonic())
            if not isinstance(hello, Hello):  # DeviceConnection guarantees it; keeps mypy exact
                raise TypeError("the first frame was accepted without being a hello")
            device_pk = await self._run_db(self._authenticate, hello)
            await self._replace(device_pk)
            info, ranges = await self._run_db(self._open_recording, device_pk, hello)
        except ProtocolError as exc:
            self.totals["refused"] += 1
            await self._refuse(ws, exc)
            return None
        except TimeoutError:
            self.totals["refused"] += 1
            await ws.close(CloseCode.POLICY_VIOLATION, f"no hello within {self.hello_timeout_s:g} s")
            return None
        except (SQLAlchemyError, StorageError) as exc:
            logger.error("storage unavailable for a device handshake: %s", exc)
            await self._refuse(
                ws, StorageUnavailableError("storage is unavailable; reconnect and resend later")
            )
            return None
        except ConnectionClosed:
            return None
        if self._stopping:
            await ws.close(CloseCode.GOING_AWAY, "server shutting down; reconnect and resend")
            return None
        await self._replace_all(info.device_pk)  # connections that raced this one
        self.totals["connections"] += 1
        tracker = SequenceTracker(ranges)
        stream = _DeviceStream(
            ws=ws,
            conn=conn,
            info=info,
            tracker=tracker,
            queue=asyncio.Queue(self.max_pending_frames),
            analysis=asyncio.Queue(self.max_pending_frames),
            connected_at=time.monotonic(),
        )
        self._streams[info.device_pk] = stream
        first_ack = Ack(upto=tracker.upto, ranges=tuple(r for r in tracker.stored_ranges if r[0] > 0))
        await self._send_ack(stream, first_ack)
        self._publish(stream, "stream", {"state": "connected", "stream_id": info.stream_id})
        logger.info(
            "device %s connected: stream %r, session %d, %s",
            info.device_uid,
            info.stream_id,
            info.session_id,
            f"resuming after sample {tracker.upto}" if tracker.stored_ranges else "new",
        )
        return stream

    async def _run_stream(self, stream: _DeviceStream) -> None:
        """Run the pipeline; then drain it, acknowledge and close with the right code."""
        stream.writer = asyncio.create_task(self._write_frames(stream))
        stream.analyst = asyncio.create_task(self._analyse(stream))
        stream.reader = asyncio.create_task(self._read_frames(stream))
        error = await self._wait_reader(stream)
        if not stream.writer.done():
            await stream.queue.put(None)
        with contextlib.suppress(asyncio.CancelledError):
            await stream.writer
        await stream.analysis.put(None)
        await self._end_recording(stream)
        error = error or stream.failure
        if error is not None:
            await self._refuse(stream.ws, error)
        elif self._stopping:
            await stream.ws.close(CloseCode.GOING_AWAY, "server shutting down; reconnect and resend")
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(self.hello_timeout_s):
                await stream.analyst
        self._publish(stream, "stream", {"state": "disconnected", "stream_id": stream.info.stream_id})
        logger.info(
            "device %s disconnected: session %d, %d frames received, %s",
            stream.info.device_uid,
            stream.info.session_id,
            stream.frames_received,
            f"refused ({error})" if error is not None else "closed",
        )

    async def _end_recording(self, stream: _DeviceStream) -> None:
        """Mark the recording session ended at its last stored sample (a reconnect clears it).

        A connection that a newer one of the device has already replaced
        leaves the mark alone: the stream goes on there.
        """
        ends = [end for _, end in stream.tracker.stored_ranges]
        if not ends or self._streams.get(stream.info.device_pk) is not stream:
            return
        try:
            await self._run_db(self._set_recording_end, stream.info.session_id, max(ends))
        except _STORAGE_ERRORS as exc:  # the samples are stored; only the end mark is missing
            logger.warning("could not mark session %d ended: %s", stream.info.session_id, exc)

    async def _wait_reader(self, stream: _DeviceStream) -> ProtocolError | None:
        """Wait for the reader; the protocol error that ended it, if any."""
        if stream.reader is None:
            raise RuntimeError("the reader is not started")
        try:
            await stream.reader
        except ProtocolError as exc:
            return exc
        except ConnectionClosed:
            return None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this handler is cancelled (abort), not just the reader
        return None

    async def _read_frames(self, stream: _DeviceStream) -> None:
        """Parse, check and queue every frame until the device stops or breaks the protocol."""
        async for message in stream.ws:
            frame = stream.conn.receive(message, time.monotonic())
            stream.frames_received += 1
            self.totals["frames_received"] += 1
            if isinstance(frame, Samples):
                await self._accept_samples(stream, frame)
            elif isinstance(frame, Vitals):
                await self._enqueue(stream, _Pending(frame, SeqKind.NEW, utcnow()))

    async def _accept_samples(self, stream: _DeviceStream, frame: Samples) -> None:
        """Place a samples frame by its seq: drop a duplicate, note a gap, queue the rest."""
        decision = stream.tracker.observe(frame.seq, frame.n_samples)
        if decision.kind is SeqKind.DUPLICATE:
            stream.duplicates += 1
            self.totals["duplicates"] += 1
            if decision.stored:  # its earlier acknowledgement may have been lost
                await self._send_ack(stream, stream.tracker.ack(frame.seq, frame.n_samples))
            return
        if decision.gap is not None:
            stream.gaps_seen += 1
            self.totals["gaps"] += 1
            self._publish(
                stream, "gap", {"from_seq": decision.gap[0], "to_seq": decision.gap[1]}, {"patient"}
            )
        await self._enqueue(stream, _Pending(frame, decision.kind, utcnow()))

    async def _enqueue(self, stream: _DeviceStream, item: _Pending) -> None:
        """Queue a frame for the writer (waits while the queue is full)."""
        stream.pending_since.append(time.monotonic())
        await stream.queue.put(item)

    async def _write_frames(self, stream: _DeviceStream) -> None:
        """Store queued frames in batches; acknowledge each batch after its commit."""
        while True:
            batch, last = await self._next_batch(stream)
            if batch:
                try:
                    await self._store(stream.info, batch)
                except _STORAGE_ERRORS as exc:
                    logger.error("storing frames of %s failed: %s", stream.info.device_uid, exc)
                    stream.tracker.discard_pending()
                    stream.stop_reading(StorageUnavailableError("storage failed; reconnect and resend"))
                    return
                await self._acknowledge(stream, batch)
            if last:
                return

    async def _next_batch(self, stream: _DeviceStream) -> tuple[list[_Pending], bool]:
        """Wait for a frame, then take what else is queued; ``True`` once the queue has ended."""
        batch: list[_Pending] = []
        item = await stream.queue.get()
        while item is not None:
            batch.append(item)
            if len(batch) >= self.max_batch_frames or stream.queue.empty():
                return batch, False
            item = stream.queue.get_nowait()
        return batch, True

    async def _acknowledge(self, stream: _DeviceStream, batch: list[_Pending]) -> None:
        """Mark a committed batch stored, acknowledge it and pass it to the analyst."""
        info = stream.info
        stored: list[tuple[int, int]] = []
        for item in batch:
            stream.pending_since.popleft()
            if isinstance(item.frame, Samples):
                stream.tracker.mark_stored(item.frame.seq, item.frame.n_samples)
                stored.append((item.frame.seq, item.frame.end_seq))
        stream.frames_stored += len(batch)
        self.totals["frames_stored"] += len(batch)
        upto = stream.tracker.upto
        if stored:
            await self._send_ack(stream, Ack(upto=upto, ranges=_merge([r for r in stored if r[1] > upto])))
        for item in batch:
            await stream.analysis.put(self._stored_item(info, item))

    @staticmethod
    def _stored_item(info: _StreamInfo, item: _Pending) -> StoredBlock | VitalsReading:
        """The processor's view of a stored frame."""
        frame = item.frame
        if isinstance(frame, Samples):
            return StoredBlock(
                samples=frame.samples,
                fs=info.fs,
                lead_names=info.leads,
                gain=info.gain,
                baseline=info.baseline,
                first_seq=frame.seq,
                session_id=info.session_id,
                patient_id=info.patient_id,
                started_at=info.started_at,
                kind=item.kind,
                replay=info.replay,
                received_at=item.received_at,
            )
        return VitalsReading(
            session_id=info.session_id,
            patient_id=info.patient_id,
            t=_vitals_time(info, frame, item.received_at),
            vitals=frame,
            simulated=info.simulated,
            replay=info.replay,
        )

    async def _analyse(self, stream: _DeviceStream) -> None:
        """Run the processor on stored data in a worker thread and publish its events."""
        loop = asyncio.get_running_loop()
        while (item := await stream.analysis.get()) is not None:
            if isinstance(item, VitalsReading):
                self._publish(stream, "vitals", _vitals_message(item))
                work: Callable[[], Sequence[LiveEvent]] = functools.partial(self.processor.vitals, item)
            else:
                work = functools.partial(self.processor.process, item)
            await self._publish_processed(stream, loop, work)
        await self._publish_processed(
            stream, loop, functools.partial(self.processor.close_stream, stream.info.session_id)
        )

    async def _publish_processed(
        self,
        stream: _DeviceStream,
        loop: asyncio.AbstractEventLoop,
        work: Callable[[], Sequence[LiveEvent]],
    ) -> None:
        """Run one processor call off the loop; publish its events."""
        try:
            events = await loop.run_in_executor(self._processing_pool, work)
        except Exception:  # a processor bug must not stop ingest; it is logged and counted
            stream.processor_errors += 1
            logger.exception("stream processor failed on session %d", stream.info.session_id)
            return
        for event in events:
            _log_alarm(event, stream.info.session_id, stream.info.patient_id)
            self._publish(stream, event.kind, event.data, event.views)

    async def _tick_loop(self, tick: Callable[[float], Sequence[LiveEvent]]) -> None:
        """Call the processor's ``tick`` every ``tick_interval_s`` off the loop; publish its events."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick_interval_s)
            try:
                events = await loop.run_in_executor(self._processing_pool, tick, self._wall_clock())
            except Exception:  # a processor bug must not stop the ticks; it is logged and counted
                self.tick_errors += 1
                logger.exception("stream processor tick failed")
                continue
            for event in events:
                _log_alarm(event, event.data.get("session_id"), event.data.get("patient_id"))
                self._publish_event(event)

    def _publish_event(self, event: LiveEvent) -> None:
        """Publish a tick event to the topics of the patient it names (none without a patient)."""
        patient = event.data.get("patient_id")
        if not isinstance(patient, int):
            return
        message = {"type": event.kind, **event.data}
        if "patient" in event.views:
            self.fanout.publish(patient_topic(patient), message)
        if "central" in event.views:
            self.fanout.publish(central_topic(patient), message)

    def _publish(
        self,
        stream: _DeviceStream,
        kind: str,
        data: Mapping[str, Any],
        views: frozenset[str] | set[str] = frozenset({"patient", "central"}),
    ) -> None:
        """Publish an event of a stream to its patient's topics (none without a patient)."""
        patient = stream.info.patient_id
        if patient is None:
            return
        message = {
            "type": kind,
            "patient_id": patient,
            "session_id": stream.info.session_id,
            "replay": stream.info.replay,
            **data,
        }
        if "patient" in views:
            self.fanout.publish(patient_topic(patient), message)
        if "central" in views:
            self.fanout.publish(central_topic(patient), message)

    async def _replace(self, device_pk: int) -> None:
        """Close an older connection of the same device (4003) and wait until it has ended."""
        old = self._streams.get(device_pk)
        if old is None:
            return
        old.stop_reading(ConnectionReplacedError("replaced by a newer connection of this device"))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.hello_timeout_s):
                await old.done.wait()

    async def _replace_all(self, device_pk: int) -> None:
        """Replace every other connection of a device; on return none is registered."""
        old = self._streams.get(device_pk)
        while old is not None:
            await self._replace(device_pk)
            newer = self._streams.get(device_pk)
            if newer is old:  # it did not end in time: take its place regardless
                logger.warning("connection of device %d did not end after replacement", device_pk)
                del self._streams[device_pk]
                return
            old = newer

    async def _send_ack(self, stream: _DeviceStream, ack: Ack) -> None:
        """Send an acknowledgement; a device that has gone will resend anyway."""
        with contextlib.suppress(ConnectionClosed):
            await stream.ws.send(encode_text_frame(ack))

    @staticmethod
    async def _refuse(ws: ServerConnection, exc: ProtocolError) -> None:
        """Send the error frame for ``exc`` and close with its code."""
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode_text_frame(error_frame(exc)))
        await ws.close(int(exc.close_code), exc.close_reason)

    async def _store(self, info: _StreamInfo, batch: Sequence[_Pending]) -> None:
        """Store a batch in the next storage round; return after its commit, or raise its error."""
        done = asyncio.get_running_loop().create_future()
        self._store_requests.append(_StoreRequest(info, batch, done))
        if self._store_rounds < self._storage_workers:
            self._store_rounds += 1
            task = asyncio.create_task(self._run_store_rounds(), name="ingest-store-rounds")
            self._store_tasks.add(task)
            task.add_done_callback(self._store_tasks.discard)
        await done

    async def _run_store_rounds(self) -> None:
        """Run storage rounds, each taking every waiting batch, until none is waiting."""
        try:
            while self._store_requests:
                requests, self._store_requests = self._store_requests, []
                self.totals["storage_rounds"] += 1
                try:
                    errors = await self._run_db(self._store_round, [(r.info, r.batch) for r in requests])
                except asyncio.CancelledError:
                    for request in requests:
                        request.done.cancel()
                    raise
                except Exception as exc:  # the pool is shut down, or a bug: every writer sees it
                    errors = [exc] * len(requests)
                for request, error in zip(requests, errors, strict=True):
                    if request.done.done():  # its writer was cancelled (abort)
                        continue
                    if error is None:
                        request.done.set_result(None)
                    else:
                        request.done.set_exception(error)
        finally:
            # No await between the loop's test and here: a batch queued later starts a new task.
            self._store_rounds -= 1

    async def _run_db(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` in the storage thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._storage_pool, functools.partial(fn, *args))

    # Storage (worker threads) --------------------------------------------------------

    def _authenticate(self, hello: Hello) -> int:
        """The id of the device that the hello's token belongs to.

        Raises
        ------
        AuthenticationError
            Unknown or revoked token, or a token of another device.
        """
        with self.db.session() as session:
            device = device_for_token(session, hello.token)
            if device is None or device.revoked_at is not None:
                raise AuthenticationError("unknown or revoked device token")
            if device.device_uid != hello.device_id:
                raise AuthenticationError(f"this token does not belong to device {hello.device_id!r}")
            return device.id

    def _open_recording(self, device_pk: int, hello: Hello) -> tuple[_StreamInfo, list[tuple[int, int]]]:
        """Create or resume the hello's recording session; its stored ranges.

        Raises
        ------
        StreamChangedError
            A resumed stream whose rate, leads, gain, baseline or units changed.
        """
        now = utcnow()
        with self.db.session() as session:
            device = session.get(Device, device_pk)
            if device is None:
                raise AuthenticationError("the device was deleted")
            recording, created = open_recording(
                session,
                device,
                stream_id=hello.stream_id,
                fs=hello.fs,
                lead_names=hello.leads,
                gain=hello.gain,
                baseline=hello.baseline,
                units=hello.units,
                started_at=now,
                firmware=hello.firmware,
            )
            if not created:
                check_resume(_hello_of(recording, hello), hello)
                recording.ended_at = None  # the stream goes on
            update_device_status(session, device, seen_at=now, firmware=hello.firmware)
            info = _StreamInfo(
                device_pk=device.id,
                device_uid=device.device_uid,
                stream_id=recording.stream_id,
                session_id=recording.id,
                patient_id=recording.patient_id,
                fs=recording.fs,
                leads=tuple(recording.lead_names),
                gain=recording.gain,
                baseline=recording.baseline,
                started_at=recording.started_at,
                replay=is_replay_hello(hello),
                simulated=simulated_sensors(hello),
            )
            return info, stored_ranges(session, recording.id)

    def _set_recording_end(self, session_id: int, end_seq: int) -> None:
        """``ended_at`` of a recording session: the time of sample ``end_seq`` (one past its last)."""
        with self.db.session() as session:
            recording = session.get(RecordingSession, session_id)
            if recording is not None:
                recording.ended_at = chunk_time(recording, end_seq)

    def _store_round(
        self, requests: Sequence[tuple[_StreamInfo, Sequence[_Pending]]]
    ) -> list[Exception | None]:
        """Store the batches of several streams in one transaction; the error of each, if any.

        When the round fails on one stream's data (a chunk conflict, a
        deleted recording...), nothing of it is kept, and each batch is
        stored again in a transaction of its own, so that only the stream at
        fault fails. Any other failure (the database is unreachable, the
        commit failed) fails every batch of the round.
        """
        now = time.monotonic()
        due = [self._status_due(info.device_pk, now) for info, _ in requests]
        if len(requests) > 1:
            try:
                with self.db.session() as session:
                    for (info, batch), status_due in zip(requests, due, strict=True):
                        self._store_frames(session, info, batch, status_due=status_due)
            except _DATA_ERRORS as exc:
                logger.info(
                    "a storage round of %d streams failed (%s); storing them one by one", len(requests), exc
                )
            except SQLAlchemyError as exc:
                return [exc] * len(requests)
            else:
                self._status_stored(requests, due, now)
                return [None] * len(requests)
        errors: list[Exception | None] = []
        for (info, batch), status_due in zip(requests, due, strict=True):
            try:
                with self.db.session() as session:
                    self._store_frames(session, info, batch, status_due=status_due)
            except _STORAGE_ERRORS as exc:
                errors.append(exc)
            else:
                errors.append(None)
                self._status_stored([(info, batch)], [status_due], now)
        return errors

    def _status_due(self, device_pk: int, now: float) -> bool:
        """Whether a device's ``last_seen_at`` is due to be written."""
        written = self._status_written.get(device_pk)
        return written is None or now - written >= _STATUS_INTERVAL_S

    def _status_stored(
        self, requests: Sequence[tuple[_StreamInfo, Sequence[_Pending]]], due: Sequence[bool], now: float
    ) -> None:
        """Note the committed ``last_seen_at`` writes of a round."""
        for (info, _), status_due in zip(requests, due, strict=True):
            if status_due:
                self._status_written[info.device_pk] = now

    @staticmethod
    def _store_frames(
        session: Session, info: _StreamInfo, batch: Sequence[_Pending], *, status_due: bool
    ) -> None:
        """Write one stream's batch of samples and vitals in ``session``.

        Raises
        ------
        StorageError
            If the device no longer exists; a deleted recording session
            fails the chunk insert (``IntegrityError``).
        """
        chunks: list[tuple[npt.ArrayLike, int]] = []
        battery: float | None = None
        rssi: int | None = None
        for item in batch:
            frame = item.frame
            if isinstance(frame, Samples):
                chunks.append((frame.samples, frame.seq))
                continue
            battery = frame.battery if frame.battery is not None else battery
            rssi = frame.rssi if frame.rssi is not None else rssi
            if info.patient_id is not None and _has_clinical_vitals(frame):
                add_vitals(
                    session,
                    info.patient_id,
                    _vitals_time(info, frame, item.received_at),
                    recording_id=info.session_id,
                    spo2=frame.spo2,
                    pulse=frame.pulse,
                    temperature=frame.temperature,
                )
        if chunks:
            insert_chunks(session, info.layout, chunks)
        if status_due or battery is not None or rssi is not None:
            update_device_status_by_id(session, info.device_pk, seen_at=utcnow(), battery=battery, rssi=rssi)

    # /live -----------------------------------------------------------------------------

    async def _serve_live(self, ws: ServerConnection) -> None:
        """Check a browser's token and scope, then stream its topics until it leaves."""
        try:
            async with asyncio.timeout(self.hello_timeout_s):
                message = await ws.recv()
            request = parse_live_request(message)
            claims = self._verify(request)
            topics = live_topics(request, claims)
        except LiveRequestError as exc:
            await self._close_live(ws, exc.close_code, str(exc))
            return
        except TimeoutError:
            await self._close_live(ws, LiveCloseCode.POLICY_VIOLATION, "no subscribe message in time")
            return
        except ConnectionClosed:
            return
        subscription = await self.fanout.subscribe(topics, maxsize=self.live_queue_size)
        self._live[ws] = subscription
        try:
            await ws.send(_subscribed_message(request, claims, topics))
            ending = await self._pump_live(ws, subscription)
            if ending is not None:
                await ws.close(*ending)
        except ConnectionClosed:
            return
        finally:
            subscription.close()
            self._live.pop(ws, None)

    def _verify(self, request: LiveRequest) -> LiveClaims:
        """The token's claims.

        Raises
        ------
        LiveUnauthorizedError
            Missing, forged or expired token.
        """
        try:
            return verify_live_token(self._live_secret, request.token, self._wall_clock())
        except LiveTokenError as exc:
            raise LiveUnauthorizedError(str(exc)) from exc

    async def _pump_live(self, ws: ServerConnection, subscription: Subscription) -> tuple[int, str] | None:
        """Send subscribed messages until the client leaves (``None``), lags, or the server stops."""
        sender = asyncio.create_task(self._send_subscribed(ws, subscription))
        listener = asyncio.create_task(self._ignore_input(ws))
        done, pending = await asyncio.wait({sender, listener}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if sender not in done:
            return None  # the browser closed the connection
        try:
            sender.result()
        except SlowSubscriberError as exc:
            return LiveCloseCode.TRY_AGAIN_LATER, "client too slow: " + str(exc)[:100]
        except ConnectionClosed:
            return None
        return LiveCloseCode.GOING_AWAY, "server shutting down"

    @staticmethod
    async def _send_subscribed(ws: ServerConnection, subscription: Subscription) -> None:
        """Forward every message of the subscription to the browser."""
        async for message in subscription:
            await ws.send(message.text)

    @staticmethod
    async def _ignore_input(ws: ServerConnection) -> None:
        """Read and discard what the browser sends, so that its leaving is noticed."""
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                continue

    @staticmethod
    async def _close_live(ws: ServerConnection, code: int, reason: str) -> None:
        """Send a live ``error`` message and close."""
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps({"type": "error", "code": int(code), "reason": reason}))
        await ws.close(int(code), reason.encode("utf-8")[:123].decode("utf-8", errors="ignore"))


# Entry points ---------------------------------------------------------------------


#: Environment variable holding the bearer token that unlocks ``/health``'s identifiers.
HEALTH_TOKEN_ENV = "CARDIAC_MONITOR_HEALTH_TOKEN"

#: Per-stream keys of :meth:`IngestServer.health` that ``/health`` keeps from anonymous callers.
_IDENTIFYING_HEALTH_KEYS = frozenset({"device", "stream_id", "session_id", "patient_id"})


@dataclass(frozen=True)
class ServeOptions:
    """How :func:`run_server` (the CLI's ``serve``) runs the server.

    Attributes
    ----------
    host, port : str, int
        Where to listen (port 0: any free port; see ``ready``).
    database_url : str, optional
        SQLAlchemy URL; default ``DATABASE_URL``, then SQLite in
        ``instance_path`` (see :func:`storage.resolve_database_url`).
    instance_path : path, optional
        Instance folder of the embedded SQLite database.
    live_secret : str or bytes, optional
        Secret shared with the dashboard for ``/live`` tokens; default
        ``$CARDIAC_MONITOR_LIVE_SECRET``, else a random one (then only this
        process can issue tokens, and a warning is logged).
    redis_url : str, optional
        Carry the live fan-out through Redis pub/sub (several processes);
        default: in memory.
    migrate : bool
        Upgrade the database schema first.
    demo_records : tuple of str
        MIT-BIH records to replay into this server (``serve --demo``); their
        devices are registered with fresh tokens.
    demo_speed : float
        Replay speed (1 = real time, 0 = as fast as acknowledgements allow).
    demo_seconds : float, optional
        Replay only the first seconds of each record (default: all of it).
    data_dir : path, optional
        Folder holding ``mitdb/`` (and ``nstdb/``).
    processor : StreamProcessor, optional
        Default :class:`~ingest.processing.DisplayProcessor`.
    certfile, keyfile : path, optional
        Serve TLS (``wss://``) with this PEM certificate (chain) and its
        private key (default: the key is in ``certfile``); checked at
        startup (:func:`ingest.tls.server_ssl_context`). The demo devices
        trust exactly this certificate.
    compression : {"deflate", None}
        Per-message compression accepted from clients (see :class:`IngestServer`).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    database_url: str | None = None
    instance_path: str | Path | None = None
    live_secret: str | bytes | None = field(default=None, repr=False)
    redis_url: str | None = None
    migrate: bool = True
    demo_records: tuple[str, ...] = ()
    demo_speed: float = 1.0
    demo_seconds: float | None = None
    data_dir: str | Path | None = None
    processor: StreamProcessor | None = None
    certfile: str | Path | None = None
    keyfile: str | Path | None = None
    compression: str | None = "deflate"


async def serve(
    options: ServeOptions,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[IngestServer], None] | None = None,
) -> None:
    """Run the ingest server until ``stop`` is set, or SIGTERM / SIGINT arrives.

    Parameters
    ----------
    options : ServeOptions
        What to serve, where, on which database.
    stop : asyncio.Event, optional
        Lets a caller that owns the event loop end the server.
    ready : callable, optional
        Called with the started server (e.g. to print its URL or read its port).

    Raises
    ------
    ingest.tls.TLSConfigError
        Before anything starts, if the certificate or key cannot be used.
    """
    stop = stop if stop is not None else asyncio.Event()
    ssl_context = _server_tls(options)
    db = Database()
    db.init(options.database_url, instance_path=options.instance_path)
    fanout: FanOut | None = None
    try:
        if options.migrate:
            await asyncio.to_thread(upgrade, db.engine)
        fanout = await RedisFanOut(options.redis_url).start() if options.redis_url else InMemoryFanOut()
        server = IngestServer(
            db,
            live_secret=_resolve_secret(options.live_secret),
            fanout=fanout,
            processor=options.processor,
            host=options.host,
            port=options.port,
            ssl_context=ssl_context,
            compression=options.compression,
        )
        await server.start()
        installed = _install_signal_handlers(stop)
        try:
            if ready is not None:
                ready(server)
            demo = await _start_demo(db, server, options)
            await stop.wait()
            if demo is not None:
                demo.cancel()
                await asyncio.gather(demo, return_exceptions=True)
            await server.stop()
        finally:
            for sig in installed:
                asyncio.get_running_loop().remove_signal_handler(sig)
    finally:
        if fanout is not None:
            await fanout.aclose()
        db.dispose()


def run_server(
    options: ServeOptions | None = None, *, ready: Callable[[IngestServer], None] | None = None
) -> None:
    """Serve ``/ingest``, ``/live`` and ``/health`` until SIGTERM or SIGINT (the CLI's ``serve``).

    SIGTERM shuts down gracefully: the server stops reading, stores and
    acknowledges what it received, and closes every connection with 1001.

    Examples
    --------
    >>> run_server(ServeOptions(port=8765, instance_path="instance"))  # doctest: +SKIP
    """
    asyncio.run(serve(options or ServeOptions(), ready=ready))


# Internals -------------------------------------------------------------------------


def _sample_time(info: _StreamInfo, seq: int) -> datetime:
    """Time of sample ``seq`` of a stream (``started_at + seq / fs``)."""
    return info.started_at + timedelta(seconds=seq / info.fs)


def _vitals_time(info: _StreamInfo, frame: Vitals, received_at: datetime) -> datetime:
    """A reading's time: on the sample clock when it has a seq, else its arrival."""
    return _sample_time(info, frame.seq) if frame.seq is not None else received_at


def _has_clinical_vitals(frame: Vitals) -> bool:
    return any(v is not None for v in (frame.spo2, frame.pulse, frame.temperature))


def _vitals_message(reading: VitalsReading) -> dict[str, Any]:
    """The live ``vitals`` message; simulated readings say which values are simulated."""
    values = {"t": reading.t.isoformat(), **dataclasses.asdict(reading.vitals)}
    return {**values, "simulated": sorted(reading.simulated)} if reading.simulated else values


def _log_alarm(event: LiveEvent, session_id: object, patient_id: object) -> None:
    """One log line per alarm raised, escalated, latched or resolved (what an operator reads back)."""
    if event.kind != "alarm":
        return
    d = event.data
    logger.info(
        "alarm %s %s: %s (%s priority, %s), patient %s, session %s: %s",
        d.get("alarm_id"),
        d.get("change"),
        d.get("kind"),
        d.get("priority"),
        d.get("state"),
        patient_id,
        session_id,
        d.get("detail"),
    )


def _hello_of(recording: RecordingSession, hello: Hello) -> Hello:
    """The stored description of a stream, as a hello to compare a new one with."""
    return Hello(
        token="",
        device_id=hello.device_id,
        stream_id=recording.stream_id,
        fs=recording.fs,
        leads=tuple(recording.lead_names),
        gain=recording.gain,
        units=recording.units,
        baseline=recording.baseline,
    )


def _merge(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


def _subscribed_message(request: LiveRequest, claims: LiveClaims, topics: list[str]) -> str:
    patients = [int(t.rsplit("/", 1)[1]) for t in topics]
    return json.dumps(
        {"type": "subscribed", "view": request.view, "patient_ids": patients, "expires_at": claims.expires_at}
    )


def _resolve_secret(secret: str | bytes | None) -> str | bytes:
    resolved = secret or os.environ.get(LIVE_SECRET_ENV)
    if resolved:
        return resolved
    logger.warning(
        "%s is not set: using a random /live token secret, so only this process can issue tokens",
        LIVE_SECRET_ENV,
    )
    return secrets.token_bytes(32)


def _server_tls(options: ServeOptions) -> ssl.SSLContext | None:
    """The TLS context of ``options`` (``None``: plain ``ws://``).

    Raises
    ------
    TLSConfigError
        If the certificate or key cannot be used.
    ValueError
        If a key file is given without a certificate.
    """
    if options.certfile is None:
        if options.keyfile is not None:
            raise ValueError("`keyfile` was given without `certfile`; give both to serve TLS")
        return None
    return server_ssl_context(options.certfile, options.keyfile)


def _install_signal_handlers(stop: asyncio.Event) -> list[signal.Signals]:
    """SIGTERM and SIGINT set ``stop``; the signals handled (none outside the main thread)."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError) as exc:
            logger.warning("cannot handle %s here (%s); stop the server another way", sig.name, exc)
            continue
        installed.append(sig)
    return installed


async def _start_demo(db: Database, server: IngestServer, options: ServeOptions) -> asyncio.Task[Any] | None:
    """Register the demo's replay devices and start replaying them into ``server``."""
    if not options.demo_records:
        return None
    tokens = await asyncio.to_thread(ensure_replay_devices, db, options.demo_records)
    replay = run_replay(
        options.demo_records,
        server.url,
        tokens,
        speed=options.demo_speed,
        seconds=options.demo_seconds,
        data_dir=options.data_dir,
        ssl_context=pinned_ssl_context(options.certfile) if options.certfile is not None else None,
    )
    task = asyncio.create_task(replay)
    task.add_done_callback(_report_demo)
    return task


def _report_demo(task: asyncio.Task[Any]) -> None:
    """Log why the demo replay stopped, if it failed."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("the demo replay stopped: %s", task.exception())
