"""Beat classification networks (CNN-LSTM and baselines), data, training and inference.

The public surface of the package; see each module for details:
:mod:`model.cnn_lstm` (the network, eqs. 10-16), :mod:`model.baselines`,
:mod:`model.registry`, :mod:`model.losses` (eq. 17), :mod:`model.data`
(beats and splits), :mod:`model.training`, :mod:`model.evaluation`,
:mod:`model.metrics`, :mod:`model.checkpoint` and :mod:`model.inference`.

References
----------
.. [1] Ronihal et al. AI-driven IoT framework for advanced cardiac monitoring
   and analysis. Ingénierie des Systèmes d'Information 30(7), 2025.
   doi:10.18280/isi.300713
"""

from model.baselines import CNNOnly, LSTMOnly
from model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from model.cnn_lstm import CNNLSTM, BeatSequenceModel, ModelConfig, ModelOutput
from model.data import (
    BeatSequences,
    PreprocessConfig,
    RecordBeats,
    Split,
    inter_patient_split,
    kfold_splits,
    load_record_beats,
    random_split,
)
from model.evaluation import compare_models, evaluate_model
from model.inference import SHIPPED_WEIGHTS, BeatClassifier, BeatPrediction, BeatStream
from model.losses import LossConfig, total_loss
from model.metrics import class_metrics, confusion_matrix, ec57_gross, summary_metrics
from model.registry import get_model, list_models
from model.training import TrainConfig, grid_search, train

__all__ = [
    "CNNLSTM",
    "SHIPPED_WEIGHTS",
    "BeatClassifier",
    "BeatPrediction",
    "BeatSequenceModel",
    "BeatSequences",
    "BeatStream",
    "CNNOnly",
    "Checkpoint",
    "LSTMOnly",
    "LossConfig",
    "ModelConfig",
    "ModelOutput",
    "PreprocessConfig",
    "RecordBeats",
    "Split",
    "TrainConfig",
    "class_metrics",
    "compare_models",
    "confusion_matrix",
    "ec57_gross",
    "evaluate_model",
    "get_model",
    "grid_search",
    "inter_patient_split",
    "kfold_splits",
    "list_models",
    "load_checkpoint",
    "load_record_beats",
    "random_split",
    "save_checkpoint",
    "summary_metrics",
    "total_loss",
    "train",
]
