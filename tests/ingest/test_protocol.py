"""Device protocol: parsing tables of good and bad frames, limits, rate, sequencing."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from ingest.protocol import (
    BINARY_HEADER,
    DEFAULT_LIMITS,
    Ack,
    AuthenticationError,
    CloseCode,
    DeviceConnection,
    Error,
    FrameTooLargeError,
    HandshakeError,
    Hello,
    MalformedFrameError,
    ProtocolError,
    ProtocolLimits,
    RateLimitedError,
    Samples,
    SeqKind,
    SequenceError,
    SequenceTracker,
    StreamChangedError,
    TokenBucket,
    UnsupportedFrameError,
    Vitals,
    check_resume,
    check_samples,
    encode_binary_samples,
    encode_text_frame,
    error_frame,
    parse_binary_frame,
    parse_text_frame,
)

HELLO: dict[str, Any] = {
    "type": "hello",
    "protocol": 1,
    "token": "s3cret",
    "device_id": "ecg-7",
    "stream_id": "boot-42",
    "fs": 360,
    "leads": ["MLII", "V5"],
    "units": "mV",
    "gain": 200.0,
    "baseline": 1024,
    "firmware": "1.4.2",
    "sensors": ["spo2", "temperature"],
}


def _text(**changes: Any) -> str:
    """The hello above with fields changed (``None`` removes a field)."""
    obj = {**HELLO, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not None})


def _binary(seq: int = 0, n: int = 3, leads: int = 2, *, magic: bytes = b"CM", version: int = 1) -> bytes:
    header = struct.pack("<2sBBQHH", magic, version, leads, seq, n, 0)
    return header + np.arange(n * leads, dtype="<i2").tobytes()


class TestParseTextFrame:
    def test_basic(self) -> None:
        hello = parse_text_frame(_text())
        assert isinstance(hello, Hello)
        assert (hello.device_id, hello.stream_id, hello.fs, hello.leads) == (
            "ecg-7",
            "boot-42",
            360.0,
            ("MLII", "V5"),
        )
        assert (hello.gain, hello.baseline, hello.sensors, hello.firmware) == (
            200.0,
            1024,
            ("spo2", "temperature"),
            "1.4.2",
        )
        assert "s3cret" not in repr(hello)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('{"type":"samples","seq":0,"samples":[[1,2],[3,4],[5,6]]}', Samples),
            ('{"type":"samples","seq":7,"samples":[512,-3,32767,-32768]}', Samples),
            ('{"type":"vitals","spo2":97.5,"pulse":72,"temperature":36.8,"battery":81,"rssi":-61}', Vitals),
            ('{"type":"vitals","seq":3600,"spo2":null,"temperature":37}', Vitals),
            ('{"type":"ack","upto":100,"ranges":[[200,300]]}', Ack),
            ('{"type":"error","code":4001,"reason":"unknown token"}', Error),
            (_text(units=None, baseline=None, firmware=None, sensors=None, protocol=None), Hello),
            (_text(extra_field_from_newer_firmware=True), Hello),
        ],
    )
    def test_good_frames(self, text: str, expected: type) -> None:
        assert isinstance(parse_text_frame(text), expected)

    def test_samples_shapes(self) -> None:
        one_lead = parse_text_frame('{"type":"samples","seq":7,"samples":[512,-3]}')
        assert isinstance(one_lead, Samples)
        assert one_lead.samples.shape == (2, 1)
        assert one_lead.samples.dtype == np.int16
        assert (one_lead.seq, one_lead.end_seq) == (7, 9)
        two = parse_text_frame('{"type":"samples","seq":0,"samples":[[1,2],[3,4],[5,6]]}')
        assert isinstance(two, Samples)
        np.testing.assert_array_equal(two.samples, [[1, 2], [3, 4], [5, 6]])

    @pytest.mark.parametrize(
        ("text", "error", "match"),
        [
            ("{not json", MalformedFrameError, "invalid JSON"),
            ("[1, 2]", MalformedFrameError, "must be a JSON object, got list"),
            ('{"seq": 1}', UnsupportedFrameError, "unknown frame type None"),
            ('{"type": "reboot"}', UnsupportedFrameError, "unknown frame type 'reboot'"),
            (_text(protocol=2), UnsupportedFrameError, "protocol version 2"),
            (_text(token=None), MalformedFrameError, "`token` must be a string, got nothing"),
            (_text(token=""), MalformedFrameError, "`token` must be 1 to 256"),
            (_text(token="\ud800"), MalformedFrameError, "`token` must be printable text"),
            (_text(firmware="1.0\n"), MalformedFrameError, "`firmware` must be printable text"),
            (_text(device_id="ecg 7; drop"), MalformedFrameError, "`device_id` may hold only"),
            (_text(fs="360"), MalformedFrameError, "`fs` must be a number, got str"),
            (_text(fs=True), MalformedFrameError, "`fs` must be a number, got bool"),
            (_text(fs=10), MalformedFrameError, r"`fs` must be a finite number in \[50, 2000\]"),
            ('{"type":"vitals","spo2":1e999}', MalformedFrameError, "`spo2` must be a finite number"),
            (_text(gain=0), MalformedFrameError, "`gain` must be positive"),
            (_text(leads=[]), MalformedFrameError, "`leads` must name at least one lead"),
            (_text(leads="MLII"), MalformedFrameError, "`leads` must be a list of names"),
            (_text(leads=["I", "I"]), MalformedFrameError, "duplicate names"),
            (_text(leads=[f"L{i}" for i in range(13)]), MalformedFrameError, "at most 12"),
            (_text(baseline=1.5), MalformedFrameError, "`baseline` must be an integer, got float"),
            ('{"type":"hello","fs":NaN}', MalformedFrameError, "NaN is not allowed"),
            ('{"type":"vitals","spo2":Infinity}', MalformedFrameError, "Infinity is not allowed"),
            (
                '{"type":"samples","samples":[1]}',
                MalformedFrameError,
                "`seq` must be an integer, got nothing",
            ),
            ('{"type":"samples","seq":-1,"samples":[1]}', MalformedFrameError, r"`seq` must be in \[0, "),
            ('{"type":"samples","seq":0,"samples":[]}', MalformedFrameError, "at least one sample"),
            (
                '{"type":"samples","seq":0,"samples":"abc"}',
                MalformedFrameError,
                "`samples` must be a list, got str",
            ),
            ('{"type":"samples","seq":0,"samples":[1, [2]]}', MalformedFrameError, "list of integers"),
            ('{"type":"samples","seq":0,"samples":[[1,2],[3]]}', MalformedFrameError, "same number of leads"),
            ('{"type":"samples","seq":0,"samples":[[]]}', MalformedFrameError, "same number of leads"),
            ('{"type":"samples","seq":0,"samples":[1.5]}', MalformedFrameError, "list of integers"),
            ('{"type":"samples","seq":0,"samples":[[1.0]]}', MalformedFrameError, "raw ADC counts"),
            ('{"type":"samples","seq":0,"samples":[[true]]}', MalformedFrameError, "raw ADC counts"),
            ('{"type":"samples","seq":0,"samples":[[40000]]}', MalformedFrameError, "raw ADC counts"),
            ('{"type":"vitals"}', MalformedFrameError, "needs at least one of spo2"),
            (
                '{"type":"vitals","spo2":101}',
                MalformedFrameError,
                r"`spo2` must be a finite number in \[0, 100\]",
            ),
            ('{"type":"vitals","temperature":"hot"}', MalformedFrameError, "`temperature` must be a number"),
            ('{"type":"vitals","rssi":-61.5}', MalformedFrameError, "`rssi` must be an integer"),
            ('{"type":"ack","upto":0,"ranges":[[5,2]]}', MalformedFrameError, "`ranges` must be a list of"),
        ],
    )
    def test_bad_frames(self, text: str, error: type[ProtocolError], match: str) -> None:
        with pytest.raises(error, match=match):
            parse_text_frame(text)

    def test_limits(self) -> None:
        limits = ProtocolLimits(max_frame_bytes=200, max_samples_per_frame=10)
        with pytest.raises(FrameTooLargeError, match="text frame of 201 bytes exceeds 200") as info:
            parse_text_frame(" " * 201, limits)
        assert info.value.close_code == CloseCode.MESSAGE_TOO_BIG == 1009
        with pytest.raises(FrameTooLargeError, match="11 samples per lead exceed the limit of 10"):
            parse_text_frame(json.dumps({"type": "samples", "seq": 0, "samples": list(range(11))}), limits)
        deep = "[" * 100_000 + "]" * 100_000
        with pytest.raises(MalformedFrameError, match="invalid JSON"):
            parse_text_frame(deep, ProtocolLimits(max_frame_bytes=1_000_000))


class TestParseBinaryFrame:
    def test_basic(self) -> None:
        frame = parse_binary_frame(_binary(seq=2**40, n=3, leads=2))
        assert frame.seq == 2**40
        np.testing.assert_array_equal(frame.samples, [[0, 1], [2, 3], [4, 5]])
        assert frame.samples.dtype == np.int16
        assert BINARY_HEADER.size == 16

    def test_documented_example(self) -> None:
        """The example in docs/protocol.md."""
        data = bytes.fromhex("434d0102 201c000000000000 0300 0000 0002f201 0302f401 1202fb01")
        frame = parse_binary_frame(data)
        assert frame.seq == 7200
        np.testing.assert_array_equal(frame.samples, [[512, 498], [515, 500], [530, 507]])

    def test_round_trip(self) -> None:
        samples = np.array([[-32768, 32767], [0, -1]], np.int16)
        frame = parse_binary_frame(encode_binary_samples(Samples(seq=99, samples=samples)))
        np.testing.assert_array_equal(frame.samples, samples)
        assert frame.seq == 99

    @pytest.mark.parametrize(
        ("data", "error", "match"),
        [
            (b"CM\x01", MalformedFrameError, "shorter than its 16-byte header"),
            (_binary(magic=b"XX"), UnsupportedFrameError, "magic b'XX'"),
            (_binary(version=2), UnsupportedFrameError, "version 2 is not supported"),
            (_binary(leads=0, n=3), MalformedFrameError, r"`n_leads` must be 1 to 12, got 0"),
            (_binary(leads=13), MalformedFrameError, "got 13"),
            (_binary(n=0), MalformedFrameError, "at least one sample"),
            (_binary(n=5000), FrameTooLargeError, "5000 samples per lead"),
            (_binary(seq=2**63), MalformedFrameError, "`seq` must be in"),
            (_binary()[:-1], MalformedFrameError, r"is 27 bytes; header says 28 \(3 samples x 2 leads\)"),
            (_binary() + b"\x00\x00", MalformedFrameError, "header says 28"),
            (_binary()[:14] + b"\x01\x00" + _binary()[16:], MalformedFrameError, "reserved field must be 0"),
            (b"\x00" * 70_000, FrameTooLargeError, "70000 bytes exceeds 65536"),
        ],
    )
    def test_bad_frames(self, data: bytes, error: type[ProtocolError], match: str) -> None:
        with pytest.raises(error, match=match):
            parse_binary_frame(data)


class TestEncodeTextFrame:
    @pytest.mark.parametrize(
        "frame",
        [
            Ack(upto=100, ranges=((200, 300),)),
            Error(code=4002, reason="slow down"),
            Vitals(seq=5, spo2=97.0, rssi=-40),
        ],
    )
    def test_round_trip(self, frame: Ack | Error | Vitals) -> None:
        assert parse_text_frame(encode_text_frame(frame)) == frame

    def test_hello_and_samples(self) -> None:
        hello = parse_text_frame(_text())
        assert parse_text_frame(encode_text_frame(hello)) == hello
        samples = Samples(seq=3, samples=np.array([[1, 2]], np.int16))
        back = parse_text_frame(encode_text_frame(samples))
        assert isinstance(back, Samples)
        np.testing.assert_array_equal(back.samples, samples.samples)


class TestErrors:
    @pytest.mark.parametrize(
        ("error", "code"),
        [
            (MalformedFrameError, 1007),
            (UnsupportedFrameError, 1003),
            (FrameTooLargeError, 1009),
            (HandshakeError, 1008),
            (StreamChangedError, 1008),
            (SequenceError, 1008),
            (AuthenticationError, 4001),
            (RateLimitedError, 4002),
        ],
    )
    def test_close_codes(self, error: type[ProtocolError], code: int) -> None:
        exc = error("why")
        assert exc.close_code == code
        assert error_frame(exc) == Error(code=code, reason="why")

    def test_edge_cases(self) -> None:
        long = AuthenticationError("é" * 200)
        assert len(long.close_reason.encode()) <= 123
        assert long.close_reason.endswith("...")
        assert isinstance(long, ProtocolError)


class TestValidation:
    def test_check_samples(self) -> None:
        hello = parse_text_frame(_text())
        assert isinstance(hello, Hello)
        check_samples(Samples(0, np.zeros((4, 2), np.int16)), hello)
        with pytest.raises(StreamChangedError, match="3 leads but the stream's hello declared 2"):
            check_samples(Samples(0, np.zeros((4, 3), np.int16)), hello)

    def test_check_resume(self) -> None:
        first = parse_text_frame(_text())
        assert isinstance(first, Hello)
        check_resume(first, parse_text_frame(_text(firmware="1.5.0", token="rotated")))  # type: ignore[arg-type]
        with pytest.raises(StreamChangedError, match=r"changed `fs` from 360\.0 to 250\.0"):
            check_resume(first, parse_text_frame(_text(fs=250)))  # type: ignore[arg-type]
        with pytest.raises(StreamChangedError, match="changed `leads`"):
            check_resume(first, parse_text_frame(_text(leads=["MLII"])))  # type: ignore[arg-type]


class TestDeviceConnection:
    def test_basic(self) -> None:
        conn = DeviceConnection()
        assert isinstance(conn.receive(_text(), 0.0), Hello)
        assert isinstance(conn.receive(_binary(seq=0, n=3, leads=2), 0.01), Samples)
        assert isinstance(conn.receive('{"type":"samples","seq":3,"samples":[[1,2]]}', 0.02), Samples)
        assert isinstance(conn.receive('{"type":"vitals","spo2":98}', 0.03), Vitals)

    @pytest.mark.parametrize(
        ("messages", "error", "match"),
        [
            ([_binary()], HandshakeError, "first frame must be a JSON hello, got a binary"),
            (['{"type":"vitals","spo2":98}'], HandshakeError, "first frame must be a hello, got vitals"),
            ([_text(), _text()], HandshakeError, "hello was already received"),
            ([_text(), _text(fs=250)], StreamChangedError, "changed `fs`"),
            ([_text(), _binary(leads=3)], StreamChangedError, "3 leads"),
            ([_text(), '{"type":"samples","seq":0,"samples":[1,2]}'], StreamChangedError, "1 leads"),
            ([_text(), '{"type":"ack","upto":0}'], UnsupportedFrameError, "devices do not send ack"),
        ],
    )
    def test_exceptions(self, messages: list[str | bytes], error: type[ProtocolError], match: str) -> None:
        conn = DeviceConnection()
        *accepted, refused = messages
        for i, message in enumerate(accepted):
            conn.receive(message, i * 0.1)
        with pytest.raises(error, match=match):
            conn.receive(refused, 1.0)

    def test_rate_limit(self) -> None:
        conn = DeviceConnection(ProtocolLimits(frames_per_second=10, burst_frames=5))
        conn.receive(_text(), 0.0)
        for i in range(4):
            conn.receive(_binary(seq=3 * i), 0.0)
        with pytest.raises(RateLimitedError, match="more than 10 frames per second") as info:
            conn.receive(_binary(seq=12), 0.0)
        assert info.value.close_code == 4002
        other = DeviceConnection(ProtocolLimits(frames_per_second=10, burst_frames=5))
        other.receive(_text(), 0.0)  # another device is not affected


class TestTokenBucket:
    def test_basic(self) -> None:
        bucket = TokenBucket(rate=10.0, capacity=3)
        assert [bucket.consume(0.0) for _ in range(4)] == [True, True, True, False]
        assert bucket.consume(0.1)  # one token back after 100 ms
        assert not bucket.consume(0.1)
        assert [bucket.consume(10.0) for _ in range(4)] == [True, True, True, False]  # capped at capacity

    def test_edge_cases(self) -> None:
        bucket = TokenBucket(rate=1.0, capacity=1)
        assert bucket.consume(100.0)
        assert not bucket.consume(50.0)  # the clock went backwards: no refill
        assert not bucket.consume(100.5)
        assert bucket.consume(101.0)
        assert not TokenBucket(rate=1.0, capacity=2).consume(0.0, cost=3)

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="`rate` must be positive"):
            TokenBucket(rate=0.0, capacity=1)
        with pytest.raises(ValueError, match="`capacity` must be at least 1"):
            TokenBucket(rate=1.0, capacity=0.5)
        bucket = TokenBucket(rate=1.0, capacity=1)
        bucket.check(0.0)
        with pytest.raises(RateLimitedError, match="more than 1 frames per second"):
            bucket.check(0.0)


class TestSequenceTracker:
    def test_basic(self) -> None:
        tracker = SequenceTracker()
        first = tracker.observe(0, 100)
        assert (first.kind, first.start, first.end, first.gap) == (SeqKind.NEW, 0, 100, None)
        assert tracker.observe(100, 100).kind is SeqKind.NEW
        tracker.mark_stored(0, 100)
        assert tracker.ack(0, 100) == Ack(upto=100, ranges=())
        tracker.mark_stored(100, 100)
        assert tracker.ack(100, 100) == Ack(upto=200, ranges=())

    def test_gaps_and_out_of_order(self) -> None:
        tracker = SequenceTracker()
        tracker.observe(0, 100)
        gap = tracker.observe(300, 100)
        assert (gap.kind, gap.gap) == (SeqKind.GAP, (100, 300))
        assert tracker.gaps == [(100, 300)]
        late = tracker.observe(200, 100)
        assert late.kind is SeqKind.OUT_OF_ORDER
        assert tracker.gaps == [(100, 200)]
        for seq in (0, 200, 300):
            tracker.mark_stored(seq, 100)
        assert tracker.ack(300, 100) == Ack(upto=100, ranges=((300, 400),))
        assert tracker.stored_ranges == [(0, 100), (200, 400)]
        tracker.observe(100, 100)
        tracker.mark_stored(100, 100)
        assert tracker.gaps == []
        assert tracker.ack().upto == 400

    def test_duplicates(self) -> None:
        tracker = SequenceTracker()
        tracker.observe(0, 100)
        pending = tracker.observe(0, 100)
        assert (pending.kind, pending.stored) == (SeqKind.DUPLICATE, False)
        tracker.mark_stored(0, 100)
        stored = tracker.observe(0, 100)
        assert (stored.kind, stored.stored) == (SeqKind.DUPLICATE, True)
        assert tracker.observe(20, 10).kind is SeqKind.DUPLICATE  # inside stored samples

    def test_restart_from_storage(self) -> None:
        tracker = SequenceTracker(stored=[(0, 500), (700, 800)])
        assert tracker.observe(0, 250).kind is SeqKind.DUPLICATE
        assert tracker.observe(500, 200).kind is SeqKind.OUT_OF_ORDER
        assert tracker.observe(800, 10).kind is SeqKind.NEW
        assert tracker.ack().upto == 500

    def test_edge_cases(self) -> None:
        late_start = SequenceTracker().observe(50, 10)
        assert (late_start.kind, late_start.gap) == (SeqKind.GAP, (0, 50))
        tracker = SequenceTracker()
        tracker.observe(0, 100)
        tracker.observe(100, 100)
        tracker.mark_stored(0, 100)
        tracker.discard_pending()  # the connection dropped before [100, 200) was stored
        assert tracker.observe(100, 100).kind is SeqKind.NEW
        assert tracker.ack() == Ack(upto=100)

    def test_exceptions(self) -> None:
        tracker = SequenceTracker()
        tracker.observe(0, 100)
        with pytest.raises(SequenceError, match=r"frame \[50, 150\) partly overlaps"):
            tracker.observe(50, 100)
        with pytest.raises(ValueError, match="`n` > 0"):
            tracker.observe(200, 0)
        with pytest.raises(ValueError, match="were not observed"):
            tracker.mark_stored(500, 10)
        with pytest.raises(ValueError, match="not stored and cannot be acknowledged"):
            tracker.ack(0, 100)
        assert DEFAULT_LIMITS.max_frame_bytes == 65_536
