"""The chunk payload codec: round trips, checksums and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from storage.codec import CODEC_NAME, CodecError, SampleBlock, checksum, decode_block, encode_block


def _block(n: int = 10, leads: tuple[str, ...] = ("MLII", "V5"), seed: int = 0) -> SampleBlock:
    rng = np.random.default_rng(seed)
    samples = rng.integers(-32768, 32767, size=(n, len(leads)), endpoint=True).astype(np.int16)
    return SampleBlock(samples, 360.0, leads, 200.0, baseline=1024, first_seq=7_200_000)


class TestEncodeBlock:
    def test_basic(self) -> None:
        block = _block()
        payload = encode_block(block)
        back = decode_block(payload)
        np.testing.assert_array_equal(back.samples, block.samples)
        assert back.samples.dtype == np.int16
        assert (back.fs, back.lead_names, back.gain, back.baseline, back.first_seq) == (
            360.0,
            ("MLII", "V5"),
            200.0,
            1024,
            7_200_000,
        )
        assert back.end_seq == 7_200_010
        # Compact: a small header plus 2 bytes a sample.
        assert len(payload) == 38 + (1 + 4) + (1 + 2) + 10 * 2 * 2
        assert CODEC_NAME == "cmc1-int16le"

    def test_physical_units(self) -> None:
        block = SampleBlock(np.array([[1224], [824]], np.int16), 250.0, ("I",), 200.0, baseline=1024)
        np.testing.assert_allclose(decode_block(encode_block(block)).physical()[:, 0], [1.0, -1.0])

    def test_edge_cases(self) -> None:
        empty = decode_block(encode_block(_block(n=0)))
        assert empty.samples.shape == (0, 2)
        wide = _block(n=3, leads=tuple(f"lead-é{i}" for i in range(12)))
        assert decode_block(encode_block(wide)).lead_names == wide.lead_names
        as_int64 = SampleBlock(np.array([[5, -5]]), 1.0, ("a", "b"), 1.0)
        np.testing.assert_array_equal(decode_block(encode_block(as_int64)).samples, [[5, -5]])

    def test_exceptions(self) -> None:
        ok = _block()
        with pytest.raises(CodecError, match="must be 2-D"):
            encode_block(SampleBlock(np.zeros(5, np.int16), 360.0, ("I",), 1.0))
        with pytest.raises(CodecError, match="must name each of the 2 columns"):
            encode_block(SampleBlock(ok.samples, 360.0, ("I",), 1.0))
        with pytest.raises(CodecError, match="fit in int16"):
            encode_block(SampleBlock(np.array([[40000]]), 360.0, ("I",), 1.0))
        with pytest.raises(CodecError, match="integer ADC counts"):
            encode_block(SampleBlock(np.array([[0.5]]), 360.0, ("I",), 1.0))
        with pytest.raises(CodecError, match="`fs` must be positive"):
            encode_block(SampleBlock(ok.samples, float("nan"), ok.lead_names, 1.0))
        with pytest.raises(CodecError, match="`gain` must be positive"):
            encode_block(SampleBlock(ok.samples, 360.0, ok.lead_names, 0.0))
        with pytest.raises(CodecError, match="`first_seq`"):
            encode_block(SampleBlock(ok.samples, 360.0, ok.lead_names, 1.0, first_seq=-1))
        with pytest.raises(CodecError, match="lead name"):
            encode_block(SampleBlock(ok.samples, 360.0, ("", "V5"), 1.0))


class TestDecodeBlock:
    def test_exceptions(self) -> None:
        payload = encode_block(_block())
        with pytest.raises(CodecError, match="shorter than the 38-byte header"):
            decode_block(payload[:20])
        with pytest.raises(CodecError, match="unknown chunk payload magic"):
            decode_block(b"XXXX" + payload[4:])
        with pytest.raises(CodecError, match="header says 40"):
            decode_block(payload[:-1])
        with pytest.raises(CodecError, match="truncated inside the lead names"):
            decode_block(payload[:40])

    @settings(max_examples=40, deadline=None)
    @given(
        samples=arrays(np.int16, st.tuples(st.integers(0, 50), st.integers(1, 4))),
        first_seq=st.integers(0, 2**64 - 1),
    )
    def test_round_trip_property(self, samples: np.ndarray, first_seq: int) -> None:
        leads = tuple(f"L{i}" for i in range(samples.shape[1]))
        block = SampleBlock(samples, 500.0, leads, 1000.0, baseline=-3, first_seq=first_seq)
        back = decode_block(encode_block(block))
        np.testing.assert_array_equal(back.samples, samples)
        assert back.first_seq == first_seq


class TestChecksum:
    def test_basic(self) -> None:
        assert checksum(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        payload = encode_block(_block())
        assert checksum(payload) == checksum(bytes(payload))
        assert checksum(payload) != checksum(payload[:-1] + b"\x00")
