"""Beat classification networks (CNN-LSTM and baselines), data, training and inference."""

__all__: list[str] = []
