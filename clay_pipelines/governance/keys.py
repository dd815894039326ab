"""Receipt signing keys. The private key never enters the database: by default it is a PEM file of
mode 0600 in a folder of the state directory (CLAY_RECEIPT_KEY_DIR), and CLAY_RECEIPT_SIGNER may
name a `module:callable` returning any object with the Signer shape (a KMS client). Only public
keys go to the receipt_keys table, where they stay for as long as receipts they signed exist."""

from __future__ import annotations

import base64
import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from clay_pipelines import settings

CURRENT = "current"  # the file naming the key that signs now


class ReceiptKeyError(RuntimeError):
    """A signing key that cannot be used (missing, unreadable, too open)."""


class Signer(Protocol):
    key_id: str
    public_key: str  # raw Ed25519 public key, base64

    def sign(self, message: bytes) -> bytes: ...


def key_id_of(public_raw: bytes) -> str:
    return "ed25519:" + hashlib.sha256(public_raw).hexdigest()[:16]


def public_raw(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_public(public_key_b64: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))


@dataclass(frozen=True)
class FileSigner:
    """An Ed25519 key held in memory, read from its 0600 file."""

    key_id: str
    public_key: str
    _private: Ed25519PrivateKey

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    @classmethod
    def from_private(cls, private: Ed25519PrivateKey) -> FileSigner:
        raw = public_raw(private)
        return cls(key_id_of(raw), base64.b64encode(raw).decode(), private)


def _write_private(folder: Path, private: Ed25519PrivateKey) -> FileSigner:
    signer = FileSigner.from_private(private)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = folder / f"{signer.key_id.replace(':', '_')}.pem"
    # Created 0600 from the start (never readable by others, not even for a moment), written whole.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    temporary = folder / f".{CURRENT}.tmp"
    temporary.write_text(signer.key_id + "\n")
    temporary.replace(folder / CURRENT)
    return signer


def _read_private(folder: Path, key_id: str) -> FileSigner:
    path = folder / f"{key_id.replace(':', '_')}.pem"
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ReceiptKeyError(f"{path}: a signing key must be readable by its owner only (mode {mode:o}, want 600)")
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as error:
        raise ReceiptKeyError(f"{path}: the current receipt key ({key_id}) is missing") from error
    if not isinstance(private, Ed25519PrivateKey):
        raise ReceiptKeyError(f"{path}: not an Ed25519 private key")
    signer = FileSigner.from_private(private)
    if signer.key_id != key_id:
        raise ReceiptKeyError(f"{path}: holds key {signer.key_id}, not {key_id}")
    return signer


def file_signer(folder: Path | None = None, create: bool = True) -> FileSigner:
    """The current key of the folder, created on first use."""
    folder = folder or settings.receipt_key_dir()
    current = folder / CURRENT
    if current.exists():
        return _read_private(folder, current.read_text().strip())
    if not create:
        raise ReceiptKeyError(f"{folder}: no receipt signing key")
    return _write_private(folder, Ed25519PrivateKey.generate())


def rotate(folder: Path | None = None) -> FileSigner:
    """A new current key; the old files stay (their public halves verify old receipts)."""
    return _write_private(folder or settings.receipt_key_dir(), Ed25519PrivateKey.generate())


def signer() -> Signer:
    """The configured signer: CLAY_RECEIPT_SIGNER's callable, else the key file."""
    hook = settings.receipt_signer_hook()
    if hook:
        module, _, attribute = hook.partition(":")
        if not attribute:
            raise ReceiptKeyError(f"CLAY_RECEIPT_SIGNER is module:callable, got {hook!r}")
        return getattr(importlib.import_module(module), attribute)()
    return file_signer()


def register(conn: psycopg.Connection, signing: Signer) -> None:
    """Publish the signer's public key (idempotent); a different key under the same id is refused."""
    conn.execute(
        "INSERT INTO receipt_keys (key_id, public_key) VALUES (%s, %s) ON CONFLICT (key_id) DO NOTHING",
        (signing.key_id, signing.public_key),
    )
    stored = conn.execute("SELECT public_key FROM receipt_keys WHERE key_id = %s", (signing.key_id,)).fetchone()
    if stored is None or stored[0] != signing.public_key:
        raise ReceiptKeyError(f"receipt key {signing.key_id} is registered with another public key")


def retire_others(conn: psycopg.Connection, current_key_id: str) -> int:
    """After a rotation: every other key stops signing (and keeps verifying)."""
    return conn.execute(
        "UPDATE receipt_keys SET retired_at = now() WHERE key_id <> %s AND retired_at IS NULL", (current_key_id,)
    ).rowcount


def public_keys(conn: psycopg.Connection) -> dict[str, Ed25519PublicKey]:
    return {key_id: load_public(b64) for key_id, b64 in conn.execute("SELECT key_id, public_key FROM receipt_keys")}
