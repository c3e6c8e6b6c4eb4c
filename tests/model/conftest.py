"""Fixtures of the model tests: one CPU thread, tiny networks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from model.cnn_lstm import ModelConfig


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_config() -> ModelConfig:
    """A small network over short windows, fast enough for unit tests."""
    return ModelConfig(n_window=40, fs=60.0, branch_channels=3, conv_channels=6, hidden=8, seq_len=4)
