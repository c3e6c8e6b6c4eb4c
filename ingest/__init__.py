"""Device ingest over WebSockets, per-patient streaming pipeline, alarms and live fan-out."""

__all__: list[str] = []
