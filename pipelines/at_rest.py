"""Encryption at rest: checkpoint files (:class:`FileCipher`) and single dead-letter values (:class:`ValueCipher`).

Checkpoint files: AES-256-GCM, a data key per file wrapped by a key-encryption key.

The key-encryption key (KEK) is 32 bytes from the environment (``checkpoint.encryption.key_env``, 64 hex
digits), read once by the driver; it is named in files only by its *key id* (the first 16 hex digits of its
SHA-256), never stored. Each file gets a fresh random data key, encrypted (wrapped) with the KEK; the file's
bytes are encrypted with the data key. The file's place in the checkpoint location (``epoch-000012/state-
aggregate-0.arrow``) is bound as associated data of both, so a file moved to another place or epoch does not
decrypt. Layout::

    b"ERENC1" | key id (16 ASCII hex) | wrap nonce (12) | wrapped data key (32 + 16 tag) | nonce (12) | ciphertext+tag

The checkpoint metadata (``_checkpoint.json``) is sealed the same way, so the offsets it holds and the tags below
are authenticated too. A wrong key is refused naming both key ids. The metadata records an encrypted file's GCM
tag (the last 16 bytes) instead of a SHA-256 of it: the tag pins the exact bytes written, and decryption checks
every byte against it, so hashing them again would only add to a checkpoint's time (it was most of what
encryption added).
Nothing here touches storage: :class:`~pipelines.state.checkpoint_store.CheckpointStore` calls :meth:`FileCipher.seal`
before writing and :meth:`FileCipher.open` after reading.

Dead-letter values (an invalid event's payload or key, ``dead_letter.payload: encrypted``) are small and sealed one
by one, directly under their key with a random nonce (at most 2**32 values per key, NIST SP 800-38D: rotate the
key long before), the dead letter's origin (``topic/partition/offset/payload``) bound as associated data::

    b"ERDL1" | key id (16 ASCII hex) | nonce (12) | ciphertext+tag
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipelines.errors import FatalError

__all__ = [
    "MAGIC",
    "VALUE_MAGIC",
    "CheckpointKeyError",
    "FileAuthenticationError",
    "FileCipher",
    "SealedValueError",
    "ValueCipher",
    "file_key_id",
    "gcm_tag",
    "key_id_of",
    "no_key",
    "parse_key",
    "sealed_key_id",
    "wrong_key",
]

MAGIC = b"ERENC1"
VALUE_MAGIC = b"ERDL1"
Bytes = bytes | bytearray | memoryview
_KEY_ID_LENGTH = 16
_NONCE = 12
_TAG = 16
_WRAPPED = 32 + _TAG
_HEADER = len(MAGIC) + _KEY_ID_LENGTH + _NONCE + _WRAPPED + _NONCE
_VALUE_PREFIX = len(VALUE_MAGIC) + _KEY_ID_LENGTH


class CheckpointKeyError(FatalError):
    """A checkpoint file cannot be decrypted: the wrong key, no key, or bytes that fail authentication."""


class FileAuthenticationError(CheckpointKeyError):
    """An encrypted file's bytes fail authentication: altered (a flipped bit, a torn write) or moved."""


def parse_key(text: str, variable: str, field: str = "checkpoint.encryption") -> bytes:
    """The 32-byte key written as 64 hex digits in ``variable``; an error naming ``field`` on anything else."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise CheckpointKeyError(
            f"{field}: {variable} must hold a 256-bit key as 64 hex digits. Operator action: export "
            f"{variable}=$(openssl rand -hex 32), and keep it: what was encrypted with it needs it to be read"
        )
    return key


def key_id_of(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:_KEY_ID_LENGTH]


class FileCipher:
    """Seals and opens checkpoint files under one key-encryption key."""

    def __init__(self, key: bytes) -> None:
        self._kek = AESGCM(key)
        self.key_id = key_id_of(key)

    def seal(self, data: Bytes, place: str) -> bytearray:
        """``data`` encrypted for the file at ``place`` (its path relative to the checkpoint location); written
        into one new buffer (no copy of ``data`` besides the ciphertext)."""
        data_key = AESGCM.generate_key(bit_length=256)
        wrap_nonce, nonce = os.urandom(_NONCE), os.urandom(_NONCE)
        associated = place.encode()
        wrapped = self._kek.encrypt(wrap_nonce, data_key, associated)
        data = memoryview(data).cast("B")  # a pyarrow Buffer too (format "b"), without a copy
        sealed = bytearray(_HEADER + data.nbytes + _TAG)
        sealed[:_HEADER] = b"".join((MAGIC, self.key_id.encode(), wrap_nonce, wrapped, nonce))
        AESGCM(data_key).encrypt_into(nonce, data, associated, memoryview(sealed)[_HEADER:])
        return sealed

    def open(self, stored: Bytes, place: str) -> Bytes:
        """The plain bytes of the file at ``place``; :class:`CheckpointKeyError` for another key or tampering."""
        view = memoryview(stored)
        written_with = file_key_id(view)
        if written_with is None:
            return stored  # written before encryption was turned on: read as it is
        if written_with != self.key_id:
            raise wrong_key(place, written_with, self.key_id)
        offset = len(MAGIC) + _KEY_ID_LENGTH
        wrap_nonce, offset = view[offset : offset + _NONCE], offset + _NONCE
        wrapped, offset = view[offset : offset + _WRAPPED], offset + _WRAPPED
        nonce, sealed = view[offset : offset + _NONCE], view[_HEADER:]
        associated = place.encode()
        plain = bytearray(len(sealed) - _TAG)
        try:
            data_key = self._kek.decrypt(bytes(wrap_nonce), bytes(wrapped), associated)
            AESGCM(data_key).decrypt_into(bytes(nonce), sealed, associated, plain)
        except InvalidTag:
            raise FileAuthenticationError(
                f"checkpoint file {place} fails authentication: it was altered, or moved from another place"
            ) from None
        return plain


def file_key_id(stored: Bytes) -> str | None:
    """The key id an encrypted file names, or None for a plain file."""
    view = memoryview(stored)
    if len(view) < _HEADER or view[: len(MAGIC)] != MAGIC:
        return None
    return bytes(view[len(MAGIC) : len(MAGIC) + _KEY_ID_LENGTH]).decode("ascii", errors="replace")


def wrong_key(place: str, written_with: str, configured: str) -> CheckpointKeyError:
    return CheckpointKeyError(
        f"checkpoint file {place} was encrypted with key id {written_with}, and the configured key has key id "
        f"{configured}. Operator action: export the key of key id {written_with} to restore this checkpoint"
    )


def no_key(place: str, written_with: str, variable: str) -> CheckpointKeyError:
    return CheckpointKeyError(
        f"checkpoint file {place} is encrypted (key id {written_with}) and checkpoint.encryption is off. Operator "
        f"action: set checkpoint.encryption and export its key ({variable}) with the key of that id"
    )


def gcm_tag(stored: Bytes) -> str:
    """The GCM tag that ends an encrypted file (hex): recorded in the metadata, it pins the file's exact bytes."""
    return bytes(memoryview(stored)[-_TAG:]).hex()


class SealedValueError(FatalError):
    """A sealed dead-letter value cannot be opened: the wrong key, or bytes altered or moved."""


class ValueCipher:
    """Seals and opens single values (a dead letter's payload or key) under one 256-bit key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.key_id = key_id_of(key)
        self._header = VALUE_MAGIC + self.key_id.encode()

    def seal(self, value: bytes, place: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return self._header + nonce + self._aead.encrypt(nonce, value, place.encode())

    def open(self, sealed: bytes, place: str) -> bytes:
        """The value sealed for ``place``; :class:`SealedValueError` naming the key id for another key."""
        written_with = sealed_key_id(sealed)
        if written_with is None:
            raise SealedValueError(f"{place} is not a sealed value")
        if written_with != self.key_id:
            raise SealedValueError(
                f"{place} was sealed with key id {written_with}, and the key given has key id {self.key_id}: "
                f"export the key of key id {written_with}"
            )
        nonce = sealed[_VALUE_PREFIX : _VALUE_PREFIX + _NONCE]
        try:
            return self._aead.decrypt(nonce, sealed[_VALUE_PREFIX + _NONCE :], place.encode())
        except InvalidTag:
            raise SealedValueError(
                f"{place} fails authentication: it was altered, or sealed for another place"
            ) from None


def sealed_key_id(value: bytes) -> str | None:
    """The key id a sealed value names, or None for a value that is not sealed."""
    if len(value) < _VALUE_PREFIX + _NONCE + _TAG or not value.startswith(VALUE_MAGIC):
        return None
    return value[len(VALUE_MAGIC) : _VALUE_PREFIX].decode("ascii", errors="replace")
