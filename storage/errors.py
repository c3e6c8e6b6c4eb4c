"""Typed errors of the storage layer."""

from __future__ import annotations

__all__ = ["ChecksumMismatchError", "ChunkConflictError", "StorageError", "UnsupportedCodecError"]


class StorageError(Exception):
    """Base class of the errors that the storage layer raises on purpose."""


class ChecksumMismatchError(StorageError):
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
