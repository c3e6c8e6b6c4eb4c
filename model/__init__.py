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

from model.baselines import CNNOnly, LSTMOnly, RawBeatEncoder
from model.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from model.cnn_lstm import (
    CNNLSTM,
    BeatSequenceModel,
    LeadAttention,
    ModelConfig,
    ModelOutput,
    MultiScaleBeatEncoder,
    dilation_for,
)
from model.data import (
    CAUSAL_RR_COLUMNS,
    DEFAULT_VALIDATION_RECORDS,
    NON_PACED_RECORDS,
    BeatSequences,
    PreprocessConfig,
    RecordBeats,
    Split,
    beats_cache_dir,
    inter_patient_split,
    kfold_splits,
    load_record_beats,
    load_records,
    normalise_windows,
    random_split,
    resample_windows,
    rr_columns,
)
from model.evaluation import (
    EVAL_PROTOCOLS,
    compare_models,
    early_alarm_report,
    evaluate_model,
    markov_transitions,
    paired_t_tests,
    plot_confusion,
    result_from_confusion,
    summarise_runs,
)
from model.inference import (
    SHIPPED_WEIGHTS,
    BeatClassifier,
    BeatPrediction,
    BeatStream,
    context_states,
    predict_arrays,
)
from model.losses import (
    LossConfig,
    abnormal_loss,
    class_weights_from_counts,
    classification_loss,
    early_alarm_loss,
    l2_penalty,
    morphology_regulariser,
    temporal_consistency,
    total_loss,
)
from model.metrics import class_metrics, confusion_matrix, ec57_gross, summary_metrics
from model.registry import MODEL_ALIASES, get_model, list_models
from model.training import (
    GRID,
    PROTOCOLS,
    TrainConfig,
    TrainData,
    grid_search,
    make_data,
    select_device,
    train,
)

__all__ = [
    "CAUSAL_RR_COLUMNS",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CNNLSTM",
    "DEFAULT_VALIDATION_RECORDS",
    "EVAL_PROTOCOLS",
    "GRID",
    "MODEL_ALIASES",
    "NON_PACED_RECORDS",
    "PROTOCOLS",
    "SHIPPED_WEIGHTS",
    "BeatClassifier",
    "BeatPrediction",
    "BeatSequenceModel",
    "BeatSequences",
    "BeatStream",
    "CNNOnly",
    "Checkpoint",
    "LSTMOnly",
    "LeadAttention",
    "LossConfig",
    "ModelConfig",
    "ModelOutput",
    "MultiScaleBeatEncoder",
    "PreprocessConfig",
    "RawBeatEncoder",
    "RecordBeats",
    "Split",
    "TrainConfig",
    "TrainData",
    "abnormal_loss",
    "beats_cache_dir",
    "class_metrics",
    "class_weights_from_counts",
    "classification_loss",
    "compare_models",
    "confusion_matrix",
    "context_states",
    "dilation_for",
    "early_alarm_loss",
    "early_alarm_report",
    "ec57_gross",
    "evaluate_model",
    "get_model",
    "grid_search",
    "inter_patient_split",
    "kfold_splits",
    "l2_penalty",
    "list_models",
    "load_checkpoint",
    "load_record_beats",
    "load_records",
    "make_data",
    "markov_transitions",
    "morphology_regulariser",
    "normalise_windows",
    "paired_t_tests",
    "plot_confusion",
    "predict_arrays",
    "random_split",
    "resample_windows",
    "result_from_confusion",
    "rr_columns",
    "save_checkpoint",
    "select_device",
    "summarise_runs",
    "summary_metrics",
    "temporal_consistency",
    "total_loss",
    "train",
]
