"""TLS: certificate checks at startup, and devices streaming over ``wss://`` to a real server.

What is proven here: a replay device that trusts the server's self-signed
certificate streams a MIT-BIH segment over ``wss://`` and every sample is
stored bit for bit; a plain ``ws://`` client, a client that does not trust
the certificate, and a client that reaches the server under a name the
certificate does not carry are refused, and store nothing; ``serve`` with a
certificate runs its demo devices over ``wss://`` and answers ``/health``
over https; a missing, unreadable, expired or mismatched certificate or key
stops the server at startup with a message that names the file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wfdb
from sqlalchemy import func, select
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake

from ingest.fanout import patient_topic
from ingest.replay import ReplayDevice, ReplayError, ensure_replay_devices, load_replay_signal, run_replay
from ingest.server import IngestServer, ServeOptions, serve
from ingest.tls import (
    MINIMUM_TLS_VERSION,
    TLSConfigError,
    client_ssl_context,
    pinned_ssl_context,
    server_ssl_context,
)
from storage import Database, Device, RecordingSession, SignalChunk, load_block

SECRET = "test-live-secret-0123456789abcdef"
TIMEOUT_S = 30.0
SECONDS = 10.0  # of record 100 streamed over wss://


def server_context(files: Any) -> ssl.SSLContext:
    """The ``wss://`` server's context of ``files`` (a certificate and key from ``make_cert``)."""
    return server_ssl_context(files.certfile, files.keyfile)


def stored_samples(db: Database, uid: str) -> np.ndarray:
    """A device's stored samples in seq order (each chunk once: keys are unique)."""
    with db.session() as session:
        chunks = session.scalars(
            select(SignalChunk)
            .join(RecordingSession, SignalChunk.session_id == RecordingSession.id)
            .join(Device, RecordingSession.device_id == Device.id)
            .where(Device.device_uid == uid)
            .order_by(SignalChunk.first_seq)
        ).all()
        starts = [c.first_seq for c in chunks]
        assert len(starts) == len(set(starts)), "a chunk was stored twice"
        blocks = [load_block(c).samples for c in chunks]
    return np.concatenate(blocks) if blocks else np.zeros((0, 2), np.int16)


def chunk_count(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(SignalChunk)) or 0)


def record_adc(data_dir: Path, record: str, seconds: float) -> np.ndarray:
    """The record's own ADC values, read with wfdb, independently of the replay code."""
    n = round(seconds * 360)
    return np.asarray(wfdb.rdrecord(str(data_dir / "mitdb" / record), sampto=n, physical=False).d_signal)


def https_get(url: str, context: ssl.SSLContext) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of a GET over https that trusts ``context``."""
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        return response.status, json.loads(response.read())


# Contexts (pure) ---------------------------------------------------------------------------


class TestServerSslContext:
    def test_basic(self, tls_files: Any) -> None:
        context = server_ssl_context(tls_files.certfile, tls_files.keyfile)
        assert context.minimum_version == MINIMUM_TLS_VERSION == ssl.TLSVersion.TLSv1_2
        assert context.verify_mode == ssl.CERT_NONE  # servers do not ask browsers for certificates

    def test_edge_cases(self, tls_files: Any, tmp_path: Path) -> None:
        """The key may follow the certificate in one file (as some proxies keep them)."""
        combined = tmp_path / "combined.pem"
        combined.write_bytes(tls_files.certfile.read_bytes() + tls_files.keyfile.read_bytes())
        assert server_ssl_context(combined).minimum_version == ssl.TLSVersion.TLSv1_2

    def test_exceptions(self, make_cert: Callable[..., Any], tmp_path: Path) -> None:
        good, other = make_cert("good"), make_cert("other")
        expired = make_cert("expired", valid_days=-1)
        junk = tmp_path / "junk.pem"
        junk.write_text("not a certificate\n")
        missing = tmp_path / "missing.crt"
        cases: list[tuple[Path, Path, str]] = [
            (missing, good.keyfile, f"certificate {missing} does not exist"),
            (good.certfile, tmp_path / "missing.key", "private key .*missing.key does not exist"),
            (junk, good.keyfile, f"{junk} holds no PEM certificate"),
            (good.keyfile, good.keyfile, "good.key holds no PEM certificate"),
            (good.certfile, junk, f"{junk} holds no usable PEM private key"),
            (
                good.certfile,
                other.keyfile,
                "private key .*other.key does not match the certificate .*good.crt",
            ),
            (expired.certfile, expired.keyfile, "certificate .*expired.crt expired on"),
        ]
        for certfile, keyfile, match in cases:
            with pytest.raises(TLSConfigError, match=match):
                server_ssl_context(certfile, keyfile)
        assert issubclass(TLSConfigError, ValueError)  # the CLI reports it as a usage error

    def test_encrypted_key_is_refused_without_a_prompt(self, tls_files: Any, tmp_path: Path) -> None:
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(tls_files.keyfile.read_bytes(), password=None)
        encrypted = tmp_path / "encrypted.key"
        encrypted.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
        with pytest.raises(TLSConfigError, match=r"encrypted\.key is encrypted"):
            server_ssl_context(tls_files.certfile, encrypted)


class TestClientSslContext:
    def test_basic(self, tls_files: Any) -> None:
        context = client_ssl_context(tls_files.certfile)
        assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.cert_store_stats()["x509"] == 1  # the CA file only, not the system's store too

    def test_edge_cases(self) -> None:
        """Without a CA file: the system's trust store, still verifying."""
        context = client_ssl_context()
        assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)

    def test_exceptions(self, tls_files: Any, tmp_path: Path) -> None:
        with pytest.raises(TLSConfigError, match=r"CA file .*nowhere\.pem does not exist"):
            client_ssl_context(tmp_path / "nowhere.pem")
        with pytest.raises(TLSConfigError, match=r"server\.key holds no PEM certificate to trust"):
            client_ssl_context(tls_files.keyfile)


class TestPinnedSslContext:
    def test_basic(self, tls_files: Any) -> None:
        context = pinned_ssl_context(tls_files.certfile)
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert not context.check_hostname
        assert context.cert_store_stats()["x509"] == 1

    def test_exceptions(self, tmp_path: Path) -> None:
        with pytest.raises(TLSConfigError, match="does not exist"):
            pinned_ssl_context(tmp_path / "nowhere.crt")


# Devices over wss:// -----------------------------------------------------------------------


class TestWss:
    def test_replay_device_streams_every_sample(
        self, sqlite_db: Database, data_dir: Path, tls_files: Any, run: Any, running: Any
    ) -> None:
        """A replay device that trusts the self-signed certificate stores its segment bit for bit."""
        token = ensure_replay_devices(sqlite_db, ["100"])["100"]
        signal = load_replay_signal("100", data_dir=data_dir, seconds=SECONDS)
        trust = client_ssl_context(tls_files.certfile)

        async def scenario() -> tuple[Any, str, tuple[int, dict[str, Any]]]:
            async with running(sqlite_db, ssl_context=server_context(tls_files)) as server:
                device = ReplayDevice(signal, f"{server.url}/ingest", token, speed=0, ssl_context=trust)
                result = await device.run()
                health = await asyncio.to_thread(https_get, f"https://127.0.0.1:{server.port}/health", trust)
                return result, server.url, health

        result, url, (status, health) = run(scenario())
        assert url.startswith("wss://127.0.0.1:")
        assert result.acked
        assert result.close_codes == []
        assert result.reconnects == 0
        np.testing.assert_array_equal(
            stored_samples(sqlite_db, "replay-mitdb-100"), record_adc(data_dir, "100", SECONDS)
        )
        assert status == 200
        assert (
            health["totals"]["frames_stored"] == health["totals"]["frames_received"] > result.frames
        )  # + vitals

    def test_run_replay_by_host_name(
        self, sqlite_db: Database, data_dir: Path, tls_files: Any, run: Any, running: Any
    ) -> None:
        """``run_replay`` with a CA file, reaching the server as ``localhost`` (a name in the certificate)."""
        tokens = ensure_replay_devices(sqlite_db, ["100"])

        async def scenario() -> list[Any]:
            async with running(sqlite_db, ssl_context=server_context(tls_files)) as server:
                return await run_replay(
                    "100",
                    f"wss://localhost:{server.port}",
                    tokens,
                    speed=0,
                    seconds=3,
                    data_dir=data_dir,
                    ssl_context=client_ssl_context(tls_files.certfile),
                )

        (result,) = run(scenario())
        assert result.acked
        np.testing.assert_array_equal(
            stored_samples(sqlite_db, "replay-mitdb-100"), record_adc(data_dir, "100", 3)
        )

    def test_plain_ws_client_is_refused(
        self, sqlite_db: Database, data_dir: Path, tls_files: Any, run: Any, running: Any
    ) -> None:
        token = ensure_replay_devices(sqlite_db, ["100"])["100"]
        signal = load_replay_signal("100", data_dir=data_dir, seconds=2)

        async def scenario() -> None:
            async with running(sqlite_db, ssl_context=server_context(tls_files)) as server:
                plain = f"ws://127.0.0.1:{server.port}/ingest"
                with pytest.raises(InvalidHandshake):
                    async with connect(plain, open_timeout=5):
                        pass
                device = ReplayDevice(signal, plain, token, speed=0, max_reconnects=1, backoff_s=0.01)
                with pytest.raises(ReplayError, match="gave up after 2 failed connection attempts"):
                    await device.run()

        run(scenario())
        assert chunk_count(sqlite_db) == 0

    def test_untrusted_certificate_is_refused(
        self,
        sqlite_db: Database,
        data_dir: Path,
        tls_files: Any,
        make_cert: Callable[..., Any],
        run: Any,
        running: Any,
    ) -> None:
        """Not retried, never downgraded: the device stops with an error that says what to do."""
        token = ensure_replay_devices(sqlite_db, ["100"])["100"]
        signal = load_replay_signal("100", data_dir=data_dir, seconds=2)
        stranger = make_cert("stranger")
        wrong_name = make_cert("wrong-name", hosts=("monitor.example.org",))

        async def scenario() -> list[str]:
            messages = []
            async with running(sqlite_db, ssl_context=server_context(tls_files)) as server:
                url = f"{server.url}/ingest"
                for trust in (None, client_ssl_context(stranger.certfile)):
                    with pytest.raises(
                        ReplayError, match=r"is not trusted \(self-signed certificate\)"
                    ) as exc:
                        await ReplayDevice(signal, url, token, speed=0, ssl_context=trust).run()
                    messages.append(str(exc.value))
            # The right certificate, reached under a name it does not carry.
            async with running(sqlite_db, ssl_context=server_context(wrong_name)) as server:
                device = ReplayDevice(
                    signal,
                    f"{server.url}/ingest",
                    token,
                    speed=0,
                    ssl_context=client_ssl_context(wrong_name.certfile),
                )
                with pytest.raises(ReplayError, match=r"not trusted .*mismatch") as exc:
                    await device.run()
                messages.append(str(exc.value))
            return messages

        messages = run(scenario())
        assert all("CA file" in m for m in messages)
        assert chunk_count(sqlite_db) == 0

    def test_exceptions(self, data_dir: Path, tls_files: Any) -> None:
        signal = load_replay_signal("100", data_dir=data_dir, seconds=1)
        with pytest.raises(ValueError, match="`ssl_context` needs a wss:// URL"):
            ReplayDevice(signal, "ws://x/ingest", "tok", ssl_context=client_ssl_context(tls_files.certfile))
        device = ReplayDevice(signal, "wss://x/ingest", "tok")
        assert device.ssl_context is not None
        assert device.ssl_context.verify_mode == ssl.CERT_REQUIRED  # verification is on by default


class TestServeTls:
    def test_demo_over_wss(self, tmp_path: Path, data_dir: Path, tls_files: Any, run: Any) -> None:
        """``serve`` with a certificate: the demo devices stream over wss:// and /health answers https."""
        db_url = f"sqlite:///{tmp_path / 'serve.db'}"
        started: asyncio.Queue[IngestServer] = asyncio.Queue()
        stop = asyncio.Event()

        async def scenario() -> tuple[str, int]:
            options = ServeOptions(
                port=0,
                database_url=db_url,
                live_secret=SECRET,
                demo_records=("100",),
                demo_speed=0,
                demo_seconds=5,
                data_dir=data_dir,
                certfile=tls_files.certfile,
                keyfile=tls_files.keyfile,
            )
            task = asyncio.create_task(serve(options, stop=stop, ready=started.put_nowait))
            server = await started.get()
            url = server.url
            watch = await server.fanout.subscribe([patient_topic(1)])
            async for message in watch:
                if message.kind == "stream" and message.data()["state"] == "disconnected":
                    break
            trust = client_ssl_context(tls_files.certfile)
            status, _ = await asyncio.to_thread(https_get, f"https://localhost:{server.port}/health", trust)
            stop.set()
            await task
            return url, status

        server_url, status = run(scenario())
        assert server_url.startswith("wss://")
        assert status == 200
        db = Database()
        db.init(db_url)
        try:
            np.testing.assert_array_equal(
                stored_samples(db, "replay-mitdb-100"), record_adc(data_dir, "100", 5)
            )
        finally:
            db.dispose()

    def test_exceptions(self, tmp_path: Path, tls_files: Any, run: Any) -> None:
        """Bad TLS settings stop ``serve`` before it touches the database."""
        db_path = tmp_path / "never.db"
        missing = tmp_path / "missing.key"
        for options, error, match in (
            (
                ServeOptions(certfile=tls_files.certfile, keyfile=missing),
                TLSConfigError,
                "missing.key does not exist",
            ),
            (ServeOptions(keyfile=tls_files.keyfile), ValueError, "`keyfile` was given without `certfile`"),
        ):
            with pytest.raises(error, match=match):
                run(serve(dataclasses.replace(options, database_url=f"sqlite:///{db_path}")))
        assert not db_path.exists()
