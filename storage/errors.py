"""Typed errors of the storage layer."""

from __future__ import annotations

__all__ = [
    "ChecksumMismatchError",
    "ChunkConflictError",
    "DataKeyError",
    "StorageError",
    "TamperedDataError",
    "UnsupportedCodecError",
]


class StorageError(Exception):
    """Base class of the errors that the storage layer raises on purpose."""


class TamperedDataError(StorageError):
    """Stored data was changed behind the application's back, or corrupted.

    Raised when an encrypted payload fails its AES-GCM authentication under
    the right key (its bytes, or the row identity they are bound to, were
    changed); :class:`ChecksumMismatchError` is the case of a checksum that
    does not match.
    """


class DataKeyError(StorageError):
    """Encrypted data cannot be read: the data key it was written under is not loaded.

    This is what a wrong key gives: a clear error naming the data and the key
    id, never garbage.

    Parameters
    ----------
    what : str
        The data, e.g. ``"signal chunk 12"`` or ``"note of alarm 3"``.
    key_id : str
        Id of the key the data is encrypted under.
    loaded : sequence of str
        Ids of the keys that are loaded (empty: none is configured).
    """

    def __init__(self, what: str, key_id: str, loaded: tuple[str, ...] = ()) -> None:
        have = ", ".join(loaded) if loaded else "none configured"
        super().__init__(
            f"{what} is encrypted under data key {key_id}, which is not loaded (loaded: {have}); "
            "set CARDIAC_DATA_KEY to that key, or list it in CARDIAC_DATA_KEY_PREVIOUS while rotating"
        )
        self.what = what
        self.key_id = key_id
        self.loaded = loaded


class ChecksumMismatchError(TamperedDataError):
    """A stored payload does not match its checksum: corrupted or tampered with.

    Parameters
    ----------
    chunk_id : int or None
        The ``signal_chunks.id`` of the bad chunk, when known.
    expected, actual : str
        Stored and recomputed SHA-256, hex.
    """

    def __init__(self, chunk_id: int | None, expected: str, actual: str) -> None:
        super().__init__(f"signal chunk {chunk_id}: checksum mismatch (stored {expected}, computed {actual})")
        self.chunk_id = chunk_id
        self.expected = expected
        self.actual = actual


class ChunkConflictError(StorageError):
    """A chunk overlaps stored samples with different content, or only partly."""


class UnsupportedCodecError(StorageError):
    """A chunk's ``codec`` is not one this version can read."""
