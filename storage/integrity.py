"""Reading a stored signal chunk back: decrypt, verify the checksum, decode.

Every read of samples goes through :func:`verified_block`, so a chunk is
never decoded unless it is intact.

What the checksum covers: ``signal_chunks.checksum`` is the SHA-256 of the
*plain* encoded block (what :func:`storage.codec.encode_block` produced),
not of the stored, possibly encrypted, bytes. Three reasons:

- a resent block is recognised by comparing checksums alone
  (:func:`storage.queries.insert_chunk`), which cannot work on ciphertexts
  made with fresh random nonces;
- key rotation re-encrypts a chunk without changing its checksum, and a
  chunk is verified against the same checksum before and after;
- verifying after decryption checks the whole path end to end, the cipher
  layer included.

The stored bytes of an encrypted chunk are protected by the AES-GCM tag
instead (bound by associated data to the chunk's session, first sequence
number, length and codec), so changing them, or moving them to another row,
fails authentication; changing the checksum column fails the comparison.
The price is that the SHA-256 of the plain block is visible to someone who
can read the database: it lets them confirm a guess of a chunk's exact
content (all samples, rate and gain), which for a real ECG is not a
practical attack. A chunk stored in clear (``key_id`` NULL, written before
a key was configured) is protected by its checksum only against accidents,
not against someone who can rewrite both columns; ``cardiac-monitor storage
verify --strict`` reports such chunks and ``cardiac-monitor keys rotate``
encrypts them.
"""

from __future__ import annotations

from typing import TypedDict, Unpack

from storage.codec import CODEC_NAME, SampleBlock, checksum, decode_block
from storage.crypto import DataCipher, open_chunk
from storage.errors import ChecksumMismatchError, UnsupportedCodecError

__all__ = ["StoredChunk", "verified_block", "verified_payload"]


class StoredChunk(TypedDict):
    """A ``signal_chunks`` row as the readers take it (keyword arguments of :func:`verified_payload`).

    All but ``chunk_id`` are bound to the ciphertext of an encrypted chunk.
    """

    chunk_id: int | None
    session_id: int
    first_seq: int
    n_samples: int
    codec: str
    #: ``signal_chunks.payload``: the stored, possibly encrypted, bytes.
    stored: bytes
    #: ``signal_chunks.checksum``: SHA-256 of the plain payload.
    digest: str
    key_id: str | None


def verified_payload(cipher: DataCipher | None, **chunk: Unpack[StoredChunk]) -> bytes:
    """The plain payload of a stored chunk, decrypted and checksum-verified.

    Parameters
    ----------
    cipher : DataCipher or None
        The keys to open encrypted chunks with.
    **chunk
        The chunk's row (:class:`StoredChunk`): ``chunk_id``, ``session_id``,
        ``first_seq``, ``n_samples``, ``codec``, ``stored``
        (``signal_chunks.payload``), ``digest`` (``signal_chunks.checksum``:
        SHA-256 of the plain payload) and ``key_id``.

    Raises
    ------
    UnsupportedCodecError
        If the chunk was written with an unknown codec.
    storage.errors.DataKeyError
        If the chunk is encrypted under a key that is not loaded.
    storage.errors.TamperedDataError
        If the ciphertext fails authentication (it, or its row, was changed).
    ChecksumMismatchError
        If the plain payload does not match the checksum.
    """
    chunk_id = chunk["chunk_id"]
    if chunk["codec"] != CODEC_NAME:
        raise UnsupportedCodecError(f"signal chunk {chunk_id}: unknown codec {chunk['codec']!r}")
    payload = open_chunk(
        cipher,
        chunk["stored"],
        chunk_id=chunk_id,
        key_id=chunk["key_id"],
        session_id=chunk["session_id"],
        first_seq=chunk["first_seq"],
        n_samples=chunk["n_samples"],
        codec=chunk["codec"],
    )
    actual = checksum(payload)
    if actual != chunk["digest"]:
        raise ChecksumMismatchError(chunk_id, chunk["digest"], actual)
    return payload


def verified_block(cipher: DataCipher | None, **chunk: Unpack[StoredChunk]) -> SampleBlock:
    """The samples of a stored chunk: :func:`verified_payload`, then decoded.

    Raises
    ------
    storage.codec.CodecError
        If the verified payload cannot be decoded.
    """
    return decode_block(verified_payload(cipher, **chunk))
