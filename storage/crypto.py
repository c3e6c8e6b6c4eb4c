"""Encryption at rest: AES-256-GCM data keys for signal chunks and alarm notes.

A :class:`DataCipher` holds the current data key and, while keys are being
rotated, the previous ones. Every value is sealed with AES-GCM under the
current key, with a fresh random 96-bit nonce and *associated data* that
binds the ciphertext to its row (a signal chunk to its recording session,
first sequence number, length and codec; a note to its alarm id), so rows
cannot be swapped or moved without the authentication failing.

A key id, the first 16 hex digits of a SHA-256 of the key, is stored with
each value (``signal_chunks.key_id``; inside an encrypted note), so a value
under a key that is not loaded gives :class:`~storage.errors.DataKeyError`
naming the value and the key id, and a value whose authentication fails
under the right key gives :class:`~storage.errors.TamperedDataError`: a
wrong key never yields garbage.

Where the key comes from (:func:`load_cipher`):

1. ``CARDIAC_DATA_KEY`` (32 bytes, base64) and, while rotating,
   ``CARDIAC_DATA_KEY_PREVIOUS`` (comma-separated);
2. otherwise, for a SQLite file database, the key file ``data_key`` beside
   it (one base64 key per line, the first current, the rest previous). The
   embedded default creates it, mode 0600, on first use, as the dashboard
   does for its ``secret_key``;
3. otherwise nothing is encrypted (a warning is logged).

The cipher travels with the session (:func:`session_cipher`, set by
:class:`storage.engine.Database`), so the storage functions keep their
signatures. Signal chunks are sealed in :func:`storage.queries.insert_chunk`;
alarm notes are sealed and opened by ORM events on
:class:`~storage.models.Alarm`, so ``alarm.note`` is plain text in Python and
``enc:v1:<key id>:<base64>`` in the database. Rows written before a key
existed (``key_id`` NULL, notes without the prefix) still read.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import re
import secrets
import struct
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Table, event, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Mapper, Session, attributes, object_session
from sqlalchemy.orm.attributes import set_committed_value

from storage.errors import DataKeyError, TamperedDataError
from storage.models import Alarm

__all__ = [
    "DATA_KEY_ENV",
    "DATA_KEY_FILE",
    "NOTE_PREFIX",
    "PREVIOUS_DATA_KEYS_ENV",
    "DataCipher",
    "chunk_associated_data",
    "generate_data_key",
    "is_encrypted_text",
    "key_id_of",
    "load_cipher",
    "note_associated_data",
    "open_chunk",
    "open_note",
    "seal_chunk",
    "session_cipher",
    "text_key_id",
]

#: Environment variable holding the current data key (32 bytes, base64).
DATA_KEY_ENV = "CARDIAC_DATA_KEY"
#: Environment variable holding previous data keys, comma-separated, while rotating.
PREVIOUS_DATA_KEYS_ENV = "CARDIAC_DATA_KEY_PREVIOUS"
#: Name of the key file beside a SQLite database (the embedded default's instance folder).
DATA_KEY_FILE = "data_key"
#: Prefix of an encrypted note: ``enc:v1:<key id>:<base64url(nonce + ciphertext + tag)>``.
NOTE_PREFIX = "enc:v1:"

#: Key of the cipher in ``Session.info``.
SESSION_INFO_KEY = "cardiac_monitor.data_cipher"

_KEY_BYTES = 32  # AES-256
_NONCE_BYTES = 12  # 96 bits, the size GCM is specified for
_TAG_BYTES = 16
_CHUNK_AD = b"cardiac-monitor/signal-chunk/v1\x00"
_NOTE_AD = b"cardiac-monitor/alarm-note/v1\x00"
_NOTE_RE = re.compile(r"enc:v1:([0-9a-f]{16}):([A-Za-z0-9_-]+={0,2})")

_log = logging.getLogger(__name__)


def generate_data_key() -> str:
    """A new random 256-bit data key, URL-safe base64 (44 characters).

    Examples
    --------
    >>> len(generate_data_key())
    44
    """
    return base64.urlsafe_b64encode(secrets.token_bytes(_KEY_BYTES)).decode("ascii")


def key_id_of(key: bytes) -> str:
    """Id of a data key: 16 hex digits of a domain-separated SHA-256 of it.

    The id names a key in errors and in ``signal_chunks.key_id`` without
    revealing it.
    """
    return hashlib.sha256(b"cardiac-monitor/data-key-id/v1\x00" + key).hexdigest()[:16]


class DataCipher:
    """AES-256-GCM under a current data key, opening data under previous keys too.

    Parameters
    ----------
    key : bytes
        The current key, 32 bytes; everything is sealed under it.
    previous : sequence of bytes
        Older keys, 32 bytes each, still accepted for reading while rotating.

    Raises
    ------
    ValueError
        If a key is not 32 bytes long.

    Examples
    --------
    >>> cipher = DataCipher(bytes(32))
    >>> sealed = cipher.encrypt(b"samples", b"row 1")
    >>> cipher.decrypt(sealed, cipher.key_id, b"row 1", what="example")
    b'samples'
    """

    def __init__(self, key: bytes, previous: Sequence[bytes] = ()) -> None:
        self._keys: dict[str, AESGCM] = {}
        for i, k in enumerate((key, *previous)):
            if len(k) != _KEY_BYTES:
                name = "`key`" if i == 0 else f"`previous[{i - 1}]`"
                raise ValueError(f"{name} must be {_KEY_BYTES} bytes (AES-256), got {len(k)}")
            self._keys.setdefault(key_id_of(k), AESGCM(k))
        self.key_id: str = key_id_of(key)

    def __repr__(self) -> str:
        return f"DataCipher(key_id={self.key_id!r}, key_ids={self.key_ids!r})"

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of the loaded keys, the current one first."""
        return tuple(self._keys)

    @classmethod
    def from_text(cls, keys: Sequence[str], *, source: str) -> DataCipher:
        """A cipher from base64 keys, the current one first.

        Parameters
        ----------
        keys : sequence of str
            Standard or URL-safe base64, padding optional.
        source : str
            Where the keys come from, for error messages (never the keys).
        """
        if not keys:
            raise ValueError(f"{source} holds no data key")
        raw = [_decode_key(text, f"{source} (key {i + 1})") for i, text in enumerate(keys)]
        return cls(raw[0], raw[1:])

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Seal under the current key: ``nonce (12 bytes) + ciphertext + tag (16 bytes)``."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self._keys[self.key_id].encrypt(nonce, plaintext, associated_data)

    def decrypt(self, sealed: bytes, key_id: str, associated_data: bytes, *, what: str) -> bytes:
        """Open what :meth:`encrypt` sealed under the key ``key_id``.

        Raises
        ------
        DataKeyError
            If the key ``key_id`` is not loaded (a wrong or missing key).
        TamperedDataError
            If authentication fails: the bytes, or the row they are bound to
            by ``associated_data``, were changed.
        """
        aead = self._keys.get(key_id)
        if aead is None:
            raise DataKeyError(what, key_id, self.key_ids)
        if len(sealed) < _NONCE_BYTES + _TAG_BYTES:
            raise TamperedDataError(f"{what}: {len(sealed)} bytes is too short to be sealed data")
        try:
            return aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], associated_data)
        except InvalidTag:
            raise TamperedDataError(
                f"{what}: authentication failed under data key {key_id}; the stored bytes, or the row "
                "they belong to, were changed"
            ) from None

    def encrypt_text(self, text: str, associated_data: bytes) -> str:
        """Seal a text as ``enc:v1:<key id>:<base64url>``."""
        sealed = self.encrypt(text.encode("utf-8"), associated_data)
        return f"{NOTE_PREFIX}{self.key_id}:{base64.urlsafe_b64encode(sealed).decode('ascii')}"

    def decrypt_text(self, value: str, associated_data: bytes, *, what: str) -> str:
        """Open a text sealed by :meth:`encrypt_text` (see :meth:`decrypt` for the errors)."""
        match = _NOTE_RE.fullmatch(value)
        if match is None:
            raise TamperedDataError(f"{what}: not an encrypted text of the form {NOTE_PREFIX}<key id>:<data>")
        sealed = base64.urlsafe_b64decode(match.group(2))
        return self.decrypt(sealed, match.group(1), associated_data, what=what).decode("utf-8")


def load_cipher(
    url: str, *, environ: Mapping[str, str] | None = None, create_key_file: bool = False
) -> DataCipher | None:
    """The data cipher of a database: from the environment, else its key file.

    Parameters
    ----------
    url : str
        The (resolved) database URL; for a SQLite file the key file is
        ``data_key`` in the same folder.
    environ : mapping, optional
        Where to read ``CARDIAC_DATA_KEY`` and ``CARDIAC_DATA_KEY_PREVIOUS``
        (default: ``os.environ``).
    create_key_file : bool
        Create the key file (mode 0600) when it is missing: the embedded
        default does, an explicit URL does not.

    Returns
    -------
    DataCipher or None
        ``None``: no key anywhere, data is stored in clear.

    Raises
    ------
    ValueError
        If a key is not 32 bytes of base64, or previous keys are given
        without a current one.
    """
    env = os.environ if environ is None else environ
    current = env.get(DATA_KEY_ENV, "").strip()
    previous = [k.strip() for k in env.get(PREVIOUS_DATA_KEYS_ENV, "").split(",") if k.strip()]
    if current:
        source = f"`{DATA_KEY_ENV}`/`{PREVIOUS_DATA_KEYS_ENV}`"
        return DataCipher.from_text([current, *previous], source=source)
    if previous:
        raise ValueError(f"`{PREVIOUS_DATA_KEYS_ENV}` is set but `{DATA_KEY_ENV}` is not")
    folder = _sqlite_folder(url)
    if folder is not None:
        path = folder / DATA_KEY_FILE
        if create_key_file and not path.exists():
            _create_key_file(path)
        if path.exists():
            return _read_key_file(path)
    if not _is_memory_sqlite(url):
        _log.warning("no data key (%s is not set): signal chunks and notes are stored in clear", DATA_KEY_ENV)
    return None


def session_cipher(session: Session) -> DataCipher | None:
    """The cipher a session seals and opens data with (``None``: in clear)."""
    cipher = session.info.get(SESSION_INFO_KEY)
    return cipher if isinstance(cipher, DataCipher) else None


# Signal chunks -------------------------------------------------------------------


def chunk_associated_data(session_id: int, first_seq: int, n_samples: int, codec: str) -> bytes:
    """Associated data that binds a chunk's ciphertext to its row identity."""
    return _CHUNK_AD + struct.pack("<qQI", session_id, first_seq, n_samples) + codec.encode("utf-8")


def seal_chunk(
    cipher: DataCipher, payload: bytes, *, session_id: int, first_seq: int, n_samples: int, codec: str
) -> bytes:
    """Encrypt a chunk payload under the current key, bound to its row."""
    return cipher.encrypt(payload, chunk_associated_data(session_id, first_seq, n_samples, codec))


def open_chunk(
    cipher: DataCipher | None,
    stored: bytes,
    *,
    chunk_id: int | None,
    key_id: str | None,
    session_id: int,
    first_seq: int,
    n_samples: int,
    codec: str,
) -> bytes:
    """The plain payload of a stored chunk (``key_id`` ``None``: stored in clear).

    Raises
    ------
    DataKeyError
        If the chunk's key is not loaded, or no cipher is configured.
    TamperedDataError
        If the ciphertext, or the row identity it is bound to, was changed.
    """
    if key_id is None:
        return stored
    what = f"signal chunk {chunk_id}"
    if cipher is None:
        raise DataKeyError(what, key_id)
    return cipher.decrypt(
        stored, key_id, chunk_associated_data(session_id, first_seq, n_samples, codec), what=what
    )


# Alarm notes ---------------------------------------------------------------------


def note_associated_data(alarm_id: int) -> bytes:
    """Associated data that binds an encrypted note to its alarm."""
    return _NOTE_AD + struct.pack("<q", alarm_id)


def is_encrypted_text(value: str) -> bool:
    """Whether ``value`` has the form of an encrypted text."""
    return _NOTE_RE.fullmatch(value) is not None


def text_key_id(value: str) -> str | None:
    """Key id of an encrypted text, ``None`` for plain text."""
    match = _NOTE_RE.fullmatch(value)
    return match.group(1) if match is not None else None


def open_note(cipher: DataCipher | None, alarm_id: int, stored: str | None) -> str | None:
    """The plain text of a stored note; plain (legacy) notes are returned as they are.

    Raises
    ------
    DataKeyError
        If the note's key is not loaded, or no cipher is configured.
    TamperedDataError
        If the note was changed, or moved from another alarm.
    """
    if stored is None:
        return None
    key_id = text_key_id(stored)
    if key_id is None:
        return stored
    what = f"note of alarm {alarm_id}"
    if cipher is None:
        raise DataKeyError(what, key_id)
    return cipher.decrypt_text(stored, note_associated_data(alarm_id), what=what)


# Internals -------------------------------------------------------------------


def _decode_key(text: str, source: str) -> bytes:
    """32 key bytes from standard or URL-safe base64; errors never show the key."""
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        raw = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{source} is not base64; make one with `cardiac-monitor keys generate`") from None
    if len(raw) != _KEY_BYTES:
        raise ValueError(f"{source} must decode to {_KEY_BYTES} bytes (AES-256), got {len(raw)}")
    return raw


def _sqlite_folder(url: str) -> Path | None:
    """Folder of a SQLite database file, ``None`` for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or _is_memory_sqlite(url):
        return None
    return Path(parsed.database or "").resolve().parent


def _is_memory_sqlite(url: str) -> bool:
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def _read_key_file(path: Path) -> DataCipher:
    """Keys of a key file: one per line, the first current; blank lines and ``#`` comments skipped."""
    if path.stat().st_mode & 0o077:
        _log.warning("data key file %s is readable by others than its owner; chmod 600 it", path)
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    keys = [line for line in lines if line and not line.startswith("#")]
    return DataCipher.from_text(keys, source=f"key file {path}")


def _create_key_file(path: Path) -> None:
    """Write a new key file, mode 0600, atomically; a concurrent creator's file wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(generate_data_key() + "\n")
        with contextlib.suppress(FileExistsError):  # never overwrite a key: a concurrent creator's wins
            os.link(tmp, path)
    finally:
        tmp.unlink()
    _log.info("created data key file %s", path)


#: Plain text of notes sealed in ``before_update``, restored in ``after_update``.
_PENDING_NOTES: weakref.WeakKeyDictionary[Alarm, str] = weakref.WeakKeyDictionary()


def _instance_cipher(target: Alarm) -> DataCipher | None:
    session = object_session(target)
    return session_cipher(session) if session is not None else None


def _open_loaded_note(target: Alarm, session: Session | None) -> None:
    """Replace a loaded encrypted note by its plain text, without marking it changed."""
    stored = target.__dict__.get("note")
    if not isinstance(stored, str) or not is_encrypted_text(stored):
        return
    cipher = session_cipher(session) if session is not None else None
    set_committed_value(target, "note", open_note(cipher, target.id, stored))


@event.listens_for(Alarm, "load")
def _note_on_load(target: Alarm, context: Any) -> None:
    _open_loaded_note(target, context.session)


@event.listens_for(Alarm, "refresh")
def _note_on_refresh(target: Alarm, context: Any, attrs: Any) -> None:
    if attrs is None or "note" in attrs:
        _open_loaded_note(target, context.session)


@event.listens_for(Alarm, "before_update")
def _seal_note_before_update(mapper: Mapper[Alarm], connection: Any, target: Alarm) -> None:
    cipher = _instance_cipher(target)
    if cipher is None or target.note is None or not attributes.get_history(target, "note").added:
        return
    _PENDING_NOTES[target] = target.note
    target.note = cipher.encrypt_text(target.note, note_associated_data(target.id))


@event.listens_for(Alarm, "after_update")
def _restore_note_after_update(mapper: Mapper[Alarm], connection: Any, target: Alarm) -> None:
    plain = _PENDING_NOTES.pop(target, None)
    if plain is not None:
        set_committed_value(target, "note", plain)


@event.listens_for(Alarm, "after_insert")
def _seal_note_after_insert(mapper: Mapper[Alarm], connection: Any, target: Alarm) -> None:
    # The id that the note is bound to exists only now.
    cipher = _instance_cipher(target)
    note = target.__dict__.get("note")
    if cipher is None or note is None:
        return
    table = Alarm.__table__
    if not isinstance(table, Table):  # pragma: no cover - declarative models map Tables
        raise TypeError(f"expected a Table, got {type(table).__name__}")
    connection.execute(
        update(table)
        .where(table.c.id == target.id)
        .values(note=cipher.encrypt_text(note, note_associated_data(target.id)))
    )
