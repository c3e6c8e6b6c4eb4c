"""The data cipher and where its keys come from (no database)."""

from __future__ import annotations

import base64
import logging
import stat
from pathlib import Path
from typing import Any

import pytest

from storage import (
    DATA_KEY_FILE,
    DataCipher,
    DataKeyError,
    TamperedDataError,
    generate_data_key,
    is_encrypted_text,
    key_id_of,
    load_cipher,
    note_associated_data,
    open_chunk,
    open_note,
    seal_chunk,
    text_key_id,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))


class TestDataCipher:
    def test_basic(self) -> None:
        cipher = DataCipher(KEY_A)
        sealed = cipher.encrypt(b"ecg samples", b"row 1")
        assert b"ecg samples" not in sealed
        assert len(sealed) == 12 + len(b"ecg samples") + 16  # nonce + ciphertext + tag
        assert cipher.decrypt(sealed, cipher.key_id, b"row 1", what="x") == b"ecg samples"
        assert cipher.encrypt(b"ecg samples", b"row 1") != sealed  # a fresh nonce each time

    def test_key_ids(self) -> None:
        assert key_id_of(KEY_A) != key_id_of(KEY_B)
        assert len(key_id_of(KEY_A)) == 16
        rotating = DataCipher(KEY_B, [KEY_A])
        assert rotating.key_id == key_id_of(KEY_B)
        assert rotating.key_ids == (key_id_of(KEY_B), key_id_of(KEY_A))
        old = DataCipher(KEY_A).encrypt(b"old", b"ad")
        assert rotating.decrypt(old, key_id_of(KEY_A), b"ad", what="x") == b"old"
        assert KEY_A.hex() not in repr(rotating)

    def test_text(self) -> None:
        cipher = DataCipher(KEY_A)
        sealed = cipher.encrypt_text("patient moved", note_associated_data(7))
        assert sealed.startswith(f"enc:v1:{cipher.key_id}:")
        assert is_encrypted_text(sealed)
        assert text_key_id(sealed) == cipher.key_id
        assert not is_encrypted_text("enc:v1: a plain note")
        assert open_note(cipher, 7, sealed) == "patient moved"
        assert open_note(cipher, 7, "legacy plain note") == "legacy plain note"
        assert open_note(None, 7, None) is None

    def test_wrong_key_is_a_clear_error(self) -> None:
        sealed = DataCipher(KEY_A).encrypt(b"x", b"ad")
        with pytest.raises(
            DataKeyError, match=rf"signal chunk 3 is encrypted under data key {key_id_of(KEY_A)}"
        ):
            DataCipher(KEY_B).decrypt(sealed, key_id_of(KEY_A), b"ad", what="signal chunk 3")
        note = DataCipher(KEY_A).encrypt_text("n", note_associated_data(1))
        with pytest.raises(DataKeyError, match=r"note of alarm 1 .* \(loaded: none configured\)"):
            open_note(None, 1, note)

    def test_tampering_is_detected(self) -> None:
        cipher = DataCipher(KEY_A)
        sealed = bytearray(cipher.encrypt(b"ecg samples", b"row 1"))
        with pytest.raises(TamperedDataError, match="authentication failed"):
            cipher.decrypt(bytes(sealed), cipher.key_id, b"row 2", what="x")  # moved to another row
        sealed[14] ^= 0x01
        with pytest.raises(TamperedDataError, match="x: authentication failed"):
            cipher.decrypt(bytes(sealed), cipher.key_id, b"row 1", what="x")
        with pytest.raises(TamperedDataError, match="too short"):
            cipher.decrypt(b"short", cipher.key_id, b"row 1", what="x")
        note = cipher.encrypt_text("n", note_associated_data(1))
        with pytest.raises(TamperedDataError, match="note of alarm 2"):
            open_note(cipher, 2, note)

    def test_chunk_binding(self) -> None:
        cipher = DataCipher(KEY_A)
        row: dict[str, Any] = {"session_id": 1, "first_seq": 500, "n_samples": 250, "codec": "cmc1-int16le"}
        sealed = seal_chunk(cipher, b"payload", **row)
        assert open_chunk(cipher, sealed, chunk_id=9, key_id=cipher.key_id, **row) == b"payload"
        assert open_chunk(None, b"clear", chunk_id=9, key_id=None, **row) == b"clear"
        for change in ({"session_id": 2}, {"first_seq": 0}, {"n_samples": 249}):
            with pytest.raises(TamperedDataError, match="signal chunk 9"):
                open_chunk(cipher, sealed, chunk_id=9, key_id=cipher.key_id, **(row | change))
        with pytest.raises(DataKeyError, match="signal chunk 9"):
            open_chunk(None, sealed, chunk_id=9, key_id=cipher.key_id, **row)

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="`key` must be 32 bytes"):
            DataCipher(bytes(16))
        with pytest.raises(ValueError, match=r"`previous\[0\]` must be 32 bytes"):
            DataCipher(KEY_A, [b"short"])
        with pytest.raises(ValueError, match=r"source \(key 1\) is not base64"):
            DataCipher.from_text(["not base64!"], source="source")
        with pytest.raises(ValueError, match="must decode to 32 bytes"):
            DataCipher.from_text([base64.b64encode(bytes(31)).decode()], source="source")
        with pytest.raises(ValueError, match="holds no data key"):
            DataCipher.from_text([], source="source")


class TestLoadCipher:
    def test_environment(self) -> None:
        new, old = generate_data_key(), base64.b64encode(KEY_A).decode()  # URL-safe and standard
        cipher = load_cipher("postgresql+psycopg://db/x", environ={"CARDIAC_DATA_KEY": new})
        assert cipher is not None
        assert cipher.key_id == key_id_of(base64.urlsafe_b64decode(new))
        env = {"CARDIAC_DATA_KEY": new, "CARDIAC_DATA_KEY_PREVIOUS": f" {old} ,"}
        rotating = load_cipher("sqlite://", environ=env)
        assert rotating is not None
        assert rotating.key_ids[1] == key_id_of(KEY_A)

    def test_key_file_of_the_embedded_default(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'cardiac-monitor.db'}"
        assert load_cipher(url, environ={}) is None  # an explicit URL never creates a key
        assert not (tmp_path / DATA_KEY_FILE).exists()
        created = load_cipher(url, environ={}, create_key_file=True)
        assert created is not None
        path = tmp_path / DATA_KEY_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        again = load_cipher(url, environ={})  # an existing key file is used
        assert again is not None
        assert again.key_id == created.key_id
        assert [p.name for p in tmp_path.iterdir()] == [DATA_KEY_FILE]  # no temp file left
        # Rotation with a key file: new key first, old ones below.
        path.write_text(f"# rotated\n{base64.b64encode(KEY_B).decode()}\n{path.read_text()}")
        rotated = load_cipher(url, environ={})
        assert rotated is not None
        assert rotated.key_ids == (key_id_of(KEY_B), created.key_id)

    def test_key_file_readable_by_others(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        path = tmp_path / DATA_KEY_FILE
        path.write_text(generate_data_key() + "\n")
        path.chmod(0o644)
        with caplog.at_level(logging.WARNING, logger="storage.crypto"):
            assert load_cipher(f"sqlite:///{tmp_path / 'x.db'}", environ={}) is not None
        assert "readable by others than its owner" in caplog.text

    def test_clear(self) -> None:
        assert load_cipher("sqlite://", environ={}) is None
        assert load_cipher("postgresql+psycopg://db/x", environ={}) is None

    def test_exceptions(self) -> None:
        with pytest.raises(
            ValueError, match="`CARDIAC_DATA_KEY_PREVIOUS` is set but `CARDIAC_DATA_KEY` is not"
        ):
            load_cipher("sqlite://", environ={"CARDIAC_DATA_KEY_PREVIOUS": generate_data_key()})
        with pytest.raises(ValueError, match="must decode to 32 bytes"):
            load_cipher("sqlite://", environ={"CARDIAC_DATA_KEY": "c2hvcnQ="})
