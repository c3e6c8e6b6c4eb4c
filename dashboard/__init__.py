"""The clinician dashboard (Dash on Flask)."""

__all__: list[str] = []
