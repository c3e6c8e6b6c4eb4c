"""One dispatch point for the beat networks: :func:`get_model`, :func:`list_models`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from model.baselines import CNNOnly, LSTMOnly
from model.cnn_lstm import CNNLSTM, BeatSequenceModel, ModelConfig

__all__ = ["MODEL_ALIASES", "get_model", "list_models"]

_REGISTRY: dict[str, Callable[[ModelConfig], BeatSequenceModel]] = {
    "cnn_lstm": CNNLSTM,
    "cnn": CNNOnly,
    "lstm": LSTMOnly,
}

#: Other spellings accepted by :func:`get_model`.
MODEL_ALIASES: dict[str, str] = {"cnn-lstm": "cnn_lstm", "cnn+lstm": "cnn_lstm", "cnnlstm": "cnn_lstm"}


def list_models() -> list[str]:
    """Names of the registered networks, the paper's model first."""
    return list(_REGISTRY)


def get_model(name: str, config: ModelConfig | None = None, **overrides: Any) -> BeatSequenceModel:
    """Build a registered network.

    Parameters
    ----------
    name : str
        ``"cnn_lstm"`` (the paper's model), ``"cnn"`` or ``"lstm"`` (Table 3
        baselines); aliases in :data:`MODEL_ALIASES`; case-insensitive.
    config : ModelConfig, optional
        Hyper-parameters (default :class:`ModelConfig()`).
    **overrides
        Fields of :class:`ModelConfig` to replace.

    Raises
    ------
    ValueError
        For an unknown name, listing the valid ones.

    Examples
    --------
    >>> get_model("CNN+LSTM", hidden=32).config.hidden
    32
    """
    key = MODEL_ALIASES.get(name.lower(), name.lower())
    if key not in _REGISTRY:
        raise ValueError(
            f"unknown model {name!r}; choose one of {list_models()} (aliases {list(MODEL_ALIASES)})"
        )
    cfg = replace(config or ModelConfig(), **overrides)
    return _REGISTRY[key](cfg)
