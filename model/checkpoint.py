"""Checkpoints as plain types: a model rebuilds from its file alone.

A checkpoint is a ``dict`` of tensors and plain Python values saved with
:func:`torch.save` and read back with ``torch.load(weights_only=True)``, so
loading never runs pickled code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.cnn_lstm import BeatSequenceModel, ModelConfig
from model.data import PreprocessConfig, Split
from model.ensemble import SeedEnsemble
from model.registry import get_model
from sigproc.beats import RR_FEATURE_NAMES
from sigproc.records import AAMI_CLASSES
from sigproc.rhythm import AFDetector, PrematurityGate, SVTRule

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "Checkpoint",
    "ensemble_checkpoints",
    "load_checkpoint",
    "out_of_fold",
    "save_checkpoint",
]

#: Identifies the file type.
CHECKPOINT_FORMAT = "cardiac-monitor/beat-classifier"
#: Bumped on incompatible changes of the layout.
CHECKPOINT_VERSION = 1


@dataclass
class Checkpoint:
    """A trained beat network with everything needed to use and audit it.

    Attributes
    ----------
    model_name : str
        Registry name (:func:`model.registry.get_model`).
    model_config : ModelConfig
        Network hyper-parameters.
    preprocess : PreprocessConfig
        Sampling rate, window, causal filter and RR settings.
    state_dict : dict of str to Tensor
        Weights.
    split : Split
        The data partition it was trained and selected on.
    label_map : list of str
        Class name of each output index.
    metrics : dict
        Validation (and test, when known) numbers, plain types.
    train_config : dict
        The training settings, plain types.
    members : int
        Networks in ``state_dict``: 1, or a :class:`model.ensemble.SeedEnsemble`
        of that many seeds (keys ``members.<i>.``; see :func:`ensemble_checkpoints`).
    af_detector : AFDetector or None
        When set, inference gates the S class in atrial fibrillation found
        from the RR intervals (:func:`model.inference.af_gate`) with these
        parameters; a part of the model as shipped, not of its weights.
    svt_rule : SVTRule or None
        When set, inference calls S the beats of fast supraventricular runs
        (:func:`model.inference.svt_gate`), before the AF gate.
    prematurity_gate : PrematurityGate or None
        When set, inference calls no beat S that is neither premature nor in
        a fast run (:func:`model.inference.prematurity_gate`), after the SVT
        rule and before the AF gate.
    """

    model_name: str
    model_config: ModelConfig
    preprocess: PreprocessConfig
    state_dict: dict[str, torch.Tensor]
    split: Split
    label_map: list[str] = field(default_factory=lambda: list(AAMI_CLASSES))
    metrics: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    members: int = 1
    af_detector: AFDetector | None = None
    svt_rule: SVTRule | None = None
    prematurity_gate: PrematurityGate | None = None

    def build(self) -> BeatSequenceModel:
        """The network with these weights, in eval mode on the CPU."""
        if self.members == 1:
            net = get_model(self.model_name, self.model_config)
        else:
            net = SeedEnsemble([get_model(self.model_name, self.model_config) for _ in range(self.members)])
        net.load_state_dict(self.state_dict)
        return net.eval()


#: The rhythm rules a checkpoint may carry, by field; stored as their parameters.
_RULES: dict[str, Any] = {
    "af_detector": AFDetector,
    "svt_rule": SVTRule,
    "prematurity_gate": PrematurityGate,
}


def ensemble_checkpoints(paths: Sequence[str | os.PathLike[str]]) -> Checkpoint:
    """One checkpoint of a :class:`model.ensemble.SeedEnsemble` of the runs at ``paths``.

    The runs must share the network, its configuration, the preprocessing
    and the split (the same training settings with different seeds); their
    metrics and training settings are kept per member.

    Raises
    ------
    ValueError
        If fewer than two runs are given, a run is itself an ensemble, or the
        runs differ in what they must share.
    """
    if len(paths) < 2:
        raise ValueError(f"an ensemble needs at least two runs, got {len(paths)}")
    runs = [load_checkpoint(p) for p in paths]
    first = runs[0]
    for path, run in zip(paths, runs, strict=True):
        if run.members != 1:
            raise ValueError(f"{path} is already an ensemble of {run.members}")
        for name in ("model_name", "model_config", "preprocess", "split", "label_map", *_RULES):
            if getattr(run, name) != getattr(first, name):
                raise ValueError(f"{path} differs from {paths[0]} in {name}; ensemble runs of one setting")
    state = {f"members.{i}.{k}": v for i, run in enumerate(runs) for k, v in run.state_dict.items()}
    return Checkpoint(
        model_name=first.model_name,
        model_config=first.model_config,
        preprocess=first.preprocess,
        state_dict=state,
        split=first.split,
        label_map=first.label_map,
        metrics={"members": [run.metrics for run in runs], "member_files": [Path(p).name for p in paths]},
        train_config={"members": [run.train_config for run in runs]},
        members=len(runs),
        **{name: getattr(first, name) for name in _RULES},
    )


def save_checkpoint(ckpt: Checkpoint, path: str | os.PathLike[str]) -> Path:
    """Write ``ckpt`` to ``path`` (parent folders are created)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "torch_version": str(torch.__version__),
        "model_name": ckpt.model_name,
        "model_config": ckpt.model_config.to_dict(),
        "preprocess": asdict(ckpt.preprocess),
        "rr_feature_names": list(RR_FEATURE_NAMES),
        "label_map": list(ckpt.label_map),
        "split": ckpt.split.to_dict(),
        "metrics": ckpt.metrics,
        "train_config": ckpt.train_config,
        "state_dict": {k: v.detach().cpu().clone() for k, v in ckpt.state_dict.items()},
        "members": ckpt.members,
        **{name: None if (rule := getattr(ckpt, name)) is None else asdict(rule) for name in _RULES},
    }
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, out)
    return out


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a beat-classifier checkpoint of a known version.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    raw = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{p} is not a {CHECKPOINT_FORMAT} checkpoint")
    if raw.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{p} has checkpoint version {raw.get('version')}; this code reads {CHECKPOINT_VERSION}"
        )
    if list(raw["rr_feature_names"]) != list(RR_FEATURE_NAMES):
        raise ValueError(
            f"{p} was trained on RR features {raw['rr_feature_names']}, not {list(RR_FEATURE_NAMES)}"
        )
    return Checkpoint(
        model_name=str(raw["model_name"]),
        model_config=ModelConfig.from_dict(dict(raw["model_config"])),
        preprocess=PreprocessConfig(**raw["preprocess"]),
        state_dict=dict(raw["state_dict"]),
        split=Split.from_dict(dict(raw["split"])),
        label_map=[str(c) for c in raw["label_map"]],
        metrics=dict(raw["metrics"]),
        train_config=dict(raw["train_config"]),
        members=int(raw.get("members", 1)),
        **{name: None if raw.get(name) is None else rule(**raw[name]) for name, rule in _RULES.items()},
    )


def out_of_fold(
    checkpoints: Sequence[str | os.PathLike[str]], records: Sequence[str], *, leads: int = 1
) -> list[tuple[str, Path, Checkpoint, BeatSequenceModel]]:
    """Each of ``records`` with the first of ``checkpoints`` whose training split does not hold it.

    With the fold networks of a leave-records-out split, every record gets
    a network that never saw it (out of fold). Returns ``(record, path,
    checkpoint, network)``; each network is built once.

    Raises
    ------
    ValueError
        If no checkpoint is given, every checkpoint was trained on a
        record, or a network cannot read ``leads`` leads.
    """
    if not checkpoints:
        raise ValueError("give at least one checkpoint")
    loaded = [(Path(p), load_checkpoint(p)) for p in checkpoints]
    built: dict[Path, BeatSequenceModel] = {}
    out = []
    for name in records:
        path, ckpt = next(((p, c) for p, c in loaded if name not in c.split.train), (None, None))
        if path is None or ckpt is None:
            raise ValueError(f"every checkpoint was trained on record {name}; give one that was not")
        if not 1 <= leads <= ckpt.model_config.n_leads:
            raise ValueError(f"`leads` must be 1 to {ckpt.model_config.n_leads}, got {leads}")
        out.append((name, path, ckpt, built.setdefault(path, ckpt.build())))
    return out
