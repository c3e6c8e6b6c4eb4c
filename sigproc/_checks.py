"""Boundary validation shared by the public functions of :mod:`sigproc`.

Every public signal function validates its inputs here so that the error
messages name the offending argument the same way everywhere.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Sampling rates outside this range are rejected as absurd (Hz).
FS_MIN = 1.0
FS_MAX = 100_000.0


class SignalWarning(UserWarning):
    """Recoverable data problem (NaN gaps, a flat segment, a short record)."""


def check_fs(fs: float, name: str = "fs") -> float:
    """Return ``fs`` as a float, or raise if it is not a plausible rate in Hz."""
    try:
        value = float(fs)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number in Hz, got {fs!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be positive and finite, got {fs!r}")
    if not FS_MIN <= value <= FS_MAX:
        raise ValueError(f"`{name}` must be between {FS_MIN:g} and {FS_MAX:g} Hz, got {value:g}")
    return value


def check_positive(value: float, name: str) -> float:
    """Return ``value`` as a float, or raise if it is not finite and positive."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number, got {value!r}") from None
    if not np.isfinite(out) or out <= 0:
        raise ValueError(f"`{name}` must be positive and finite, got {value!r}")
    return out


def as_signal(
    x: ArrayLike,
    name: str = "x",
    *,
    allow_nan: bool = False,
    ndim: int | tuple[int, ...] = 1,
    min_length: int = 1,
) -> NDArray[np.float64]:
    """Convert ``x`` to a float64 array and check its shape and values.

    Parameters
    ----------
    x : array_like
        The signal.
    name : str
        Argument name used in error messages.
    allow_nan : bool
        Accept NaN samples (sensor dropouts). Infinite values are never
        accepted.
    ndim : int or tuple of int
        Accepted numbers of dimensions. For 2-D input the layout is
        ``(n_samples, n_leads)``.
    min_length : int
        Minimum number of samples.

    Raises
    ------
    ValueError
        If the array is empty, has the wrong number of dimensions, contains
        infinite values, or NaN when ``allow_nan`` is false.
    """
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a numeric array") from None
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in allowed:
        want = " or ".join(f"{d}-D" for d in allowed)
        raise ValueError(f"`{name}` must be {want}, got a {arr.ndim}-D array of shape {arr.shape}")
    if arr.shape[0] < min_length:
        raise ValueError(f"`{name}` must have at least {min_length} sample(s), got {arr.shape[0]}")
    if arr.size and not allow_nan and np.isnan(arr).any():
        raise ValueError(f"`{name}` contains NaN samples")
    if arr.size and np.isinf(arr).any():
        raise ValueError(f"`{name}` contains infinite samples")
    return arr
