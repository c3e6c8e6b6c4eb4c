"""Amplitude normalisation of ECG windows and beats.

Three methods behind one dispatch point, :func:`normalize`:

``"zscore"``
    subtract the mean, divide by the standard deviation;
``"minmax"``
    map the range onto [0, 1];
``"robust"``
    subtract the median, divide by the scaled median absolute deviation
    (``1.4826 * MAD``, consistent with the standard deviation for Gaussian
    data [1]_), which a single motion spike cannot inflate.

Normalisation runs along one axis, so the same call normalises a whole
window (``axis=0`` of an ``(n_samples, n_leads)`` array) or every beat of a
``(n_beats, n_leads, n_window)`` stack (``axis=-1``).

References
----------
.. [1] Rousseeuw PJ, Croux C. Alternatives to the median absolute deviation.
   J Am Stat Assoc 88(424):1273-1283, 1993.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sigproc._checks import as_signal

__all__ = ["NORMALIZE_METHODS", "normalize"]

NormalizeMethod = Literal["zscore", "minmax", "robust"]

#: Accepted method names and their aliases.
NORMALIZE_METHODS: dict[str, NormalizeMethod] = {
    "zscore": "zscore",
    "z": "zscore",
    "standard": "zscore",
    "minmax": "minmax",
    "min-max": "minmax",
    "robust": "robust",
    "mad": "robust",
}

_MAD_TO_SD = 1.4826


def normalize(
    x: ArrayLike, method: str = "zscore", *, axis: int = -1, eps: float = 1e-8
) -> NDArray[np.float64]:
    """Normalise ``x`` along ``axis``.

    Parameters
    ----------
    x : array_like
        Window or stack of beats; 1-D to 3-D.
    method : {"zscore", "minmax", "robust"}
        Normalisation; aliases ``"z"``, ``"standard"``, ``"min-max"``,
        ``"mad"``.
    axis : int
        Axis along which statistics are computed (``-1``: per beat and lead
        for a ``(n_beats, n_leads, n_window)`` stack).
    eps : float
        Floor of the scale; a flat segment maps to zeros instead of NaN.

    Returns
    -------
    ndarray
        Same shape as ``x``.

    Raises
    ------
    ValueError
        If ``method`` is unknown, or ``x`` is empty or holds NaN or inf.

    Examples
    --------
    >>> normalize([1.0, 2.0, 3.0], "minmax").tolist()
    [0.0, 0.5, 1.0]
    >>> normalize([1.0, 2.0, 3.0, 100.0], "robust").round(2).tolist()
    [-1.01, -0.34, 0.34, 65.76]
    """
    key = NORMALIZE_METHODS.get(str(method).lower())
    if key is None:
        valid = ", ".join(sorted(set(NORMALIZE_METHODS)))
        raise ValueError(f"`method` must be one of {valid}; got {method!r}")
    arr = as_signal(x, ndim=(1, 2, 3))
    if arr.shape[axis] < 1:
        raise ValueError(f"`x` has no samples along axis {axis}")
    if key == "zscore":
        centre = arr.mean(axis=axis, keepdims=True)
        scale = arr.std(axis=axis, keepdims=True)
    elif key == "minmax":
        centre = arr.min(axis=axis, keepdims=True)
        scale = arr.max(axis=axis, keepdims=True) - centre
    else:
        centre = np.median(arr, axis=axis, keepdims=True)
        scale = _MAD_TO_SD * np.median(np.abs(arr - centre), axis=axis, keepdims=True)
    return np.asarray((arr - centre) / np.maximum(scale, eps), dtype=np.float64)
