"""Fixtures of the model tests: one CPU thread, tiny networks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from model.cnn_lstm import ModelConfig
from model.training import TrainConfig


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


@pytest.fixture
def tiny_train(data_dir: Path) -> TrainConfig:
    """Training settings for a run of seconds on records 101 and 106 (validation: 118)."""
    return TrainConfig(
        records=("101", "106"),
        validation_records=("118",),
        epochs=3,
        max_batches=6,
        batch_size=16,
        hidden=8,
        branch_channels=3,
        conv_channels=8,
        seq_len=8,
        lr=3e-3,
        data_dir=str(data_dir),
    )
