"""Compact, self-describing binary encoding of a block of ECG samples.

A signal chunk's payload holds raw int16 ADC counts for every lead together
with what is needed to turn them back into millivolts, so that a chunk can be
read on its own, years later, without its recording session row:

======  ====  ========  ===================================================
offset  size  type      field
======  ====  ========  ===================================================
0       4     bytes     magic ``b"CMC1"`` (Cardiac Monitor Chunk, layout 1)
4       1     uint8     number of leads ``L`` (1 to 255)
5       1     uint8     reserved, 0
6       4     uint32    number of samples per lead ``N``
10      8     float64   sampling rate in Hz
18      8     float64   gain in ADC counts per physical unit
26      4     int32     baseline: the ADC count of 0 physical units
30      8     uint64    sequence number of the first sample
38      ...   ...       ``L`` lead names: uint8 length, then UTF-8 bytes
...     ...   int16     ``N * L`` samples, sample-major (``s0l0 s0l1 ... s1l0``)
======  ====  ========  ===================================================

All numbers are little-endian. The physical value of a count ``d`` is
``(d - baseline) / gain``, as in WFDB.

The checksum of a chunk (:func:`checksum`) is the SHA-256 of these plain
bytes. Encryption at rest (:mod:`storage.crypto`) wraps the whole payload, so
the checksum stays the checksum of what this module produced (see
:mod:`storage.integrity` for why).
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["CODEC_NAME", "CodecError", "SampleBlock", "checksum", "decode_block", "encode_block"]

#: Name stored in ``signal_chunks.codec`` for payloads written by this module.
CODEC_NAME = "cmc1-int16le"

_MAGIC = b"CMC1"
_HEADER = struct.Struct("<4sBBIddiQ")
_MAX_LEADS = 255
_MAX_LEAD_NAME_BYTES = 255


class CodecError(ValueError):
    """A payload cannot be encoded or decoded (bad header, truncated data)."""


@dataclass(frozen=True, eq=False)
class SampleBlock:
    """A contiguous block of samples of one recording.

    Attributes
    ----------
    samples : numpy.ndarray
        ``(n_samples, n_leads)`` int16 ADC counts.
    fs : float
        Sampling rate in Hz.
    lead_names : tuple of str
        One name per column of ``samples``.
    gain : float
        ADC counts per physical unit (per mV for ECG).
    baseline : int
        ADC count that corresponds to 0 physical units.
    first_seq : int
        Sequence number (sample index in the device's stream) of row 0.
    """

    samples: npt.NDArray[np.int16]
    fs: float
    lead_names: tuple[str, ...]
    gain: float
    baseline: int = 0
    first_seq: int = 0

    @property
    def n_samples(self) -> int:
        """Number of samples per lead."""
        return int(self.samples.shape[0])

    @property
    def end_seq(self) -> int:
        """Sequence number one past the last sample."""
        return self.first_seq + self.n_samples

    def physical(self) -> npt.NDArray[np.float64]:
        """Samples in physical units, ``(counts - baseline) / gain``."""
        return (self.samples.astype(np.float64) - self.baseline) / self.gain


def encode_block(block: SampleBlock) -> bytes:
    """Encode a block of samples into the compact payload described above.

    Parameters
    ----------
    block : SampleBlock
        The samples and their description. ``samples`` must be 2-D with one
        column per lead name and values that fit in int16.

    Returns
    -------
    bytes
        The payload.

    Raises
    ------
    CodecError
        If the shape, the lead names, the rate, the gain or the sequence
        number is invalid.

    Examples
    --------
    >>> import numpy as np
    >>> block = SampleBlock(np.zeros((3, 1), np.int16), 360.0, ("MLII",), 200.0)
    >>> decode_block(encode_block(block)).n_samples
    3
    """
    samples = np.asarray(block.samples)
    if samples.ndim != 2:
        raise CodecError(f"`samples` must be 2-D (n_samples, n_leads), got shape {samples.shape}")
    n_samples, n_leads = samples.shape
    if not 1 <= n_leads <= _MAX_LEADS or n_leads != len(block.lead_names):
        raise CodecError(
            f"`lead_names` must name each of the {n_leads} columns (1 to {_MAX_LEADS}), "
            f"got {len(block.lead_names)} names"
        )
    if samples.dtype != np.int16:
        if not np.issubdtype(samples.dtype, np.integer):
            raise CodecError(f"`samples` must be integer ADC counts, got dtype {samples.dtype}")
        info = np.iinfo(np.int16)
        if samples.size and (samples.min() < info.min or samples.max() > info.max):
            raise CodecError("`samples` must fit in int16")
    _check_positive("fs", block.fs)
    _check_positive("gain", block.gain)
    if not -(2**31) <= block.baseline < 2**31:
        raise CodecError(f"`baseline` must fit in int32, got {block.baseline}")
    if not 0 <= block.first_seq < 2**64:
        raise CodecError(f"`first_seq` must be in [0, 2**64), got {block.first_seq}")
    names = b"".join(_encode_name(name) for name in block.lead_names)
    header = _HEADER.pack(
        _MAGIC, n_leads, 0, n_samples, block.fs, block.gain, block.baseline, block.first_seq
    )
    data = np.ascontiguousarray(samples, dtype="<i2").tobytes()
    return header + names + data


def decode_block(payload: bytes) -> SampleBlock:
    """Decode a payload written by :func:`encode_block`.

    Parameters
    ----------
    payload : bytes
        The plain (decrypted) payload.

    Returns
    -------
    SampleBlock
        The samples as a read-only ``(n_samples, n_leads)`` int16 array.

    Raises
    ------
    CodecError
        If the magic is wrong or the payload is truncated or too long.
    """
    if len(payload) < _HEADER.size:
        raise CodecError(f"payload of {len(payload)} bytes is shorter than the {_HEADER.size}-byte header")
    magic, n_leads, _, n_samples, fs, gain, baseline, first_seq = _HEADER.unpack_from(payload)
    if magic != _MAGIC:
        raise CodecError(f"unknown chunk payload magic {magic!r}, expected {_MAGIC!r}")
    offset = _HEADER.size
    names: list[str] = []
    for _ in range(n_leads):
        if offset >= len(payload):
            raise CodecError("payload truncated inside the lead names")
        size = payload[offset]
        raw = payload[offset + 1 : offset + 1 + size]
        if len(raw) != size:
            raise CodecError("payload truncated inside the lead names")
        names.append(raw.decode("utf-8"))
        offset += 1 + size
    expected = n_samples * n_leads * 2
    if len(payload) - offset != expected:
        raise CodecError(
            f"payload holds {len(payload) - offset} sample bytes, header says {expected} "
            f"({n_samples} samples x {n_leads} leads)"
        )
    samples = np.frombuffer(payload, dtype="<i2", offset=offset).reshape(n_samples, n_leads)
    return SampleBlock(
        samples=samples.astype(np.int16, copy=False),
        fs=fs,
        lead_names=tuple(names),
        gain=gain,
        baseline=baseline,
        first_seq=first_seq,
    )


def checksum(payload: bytes) -> str:
    """SHA-256 of a plain payload, as 64 lowercase hex digits."""
    return hashlib.sha256(payload).hexdigest()


# Internals -------------------------------------------------------------------


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise CodecError(f"`{name}` must be positive and finite, got {value}")


def _encode_name(name: str) -> bytes:
    raw = name.encode("utf-8")
    if not 1 <= len(raw) <= _MAX_LEAD_NAME_BYTES:
        raise CodecError(f"lead name {name!r} must be 1 to {_MAX_LEAD_NAME_BYTES} UTF-8 bytes")
    return bytes([len(raw)]) + raw
