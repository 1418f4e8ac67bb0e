"""Sealing of adminpass / user_data at rest with ORCH_SECRET_KEY (Fernet, key derived by HKDF)."""

from __future__ import annotations

import base64
import json

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class SealError(Exception):
    """The sealed secrets cannot be opened (wrong or rotated ORCH_SECRET_KEY)."""


def _fernet(secret_key: str) -> Fernet:
    # HKDF turns any operator-chosen string into the 32-byte key Fernet needs.
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"reimage-sealing-v1", info=b"os-change"
    ).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def seal(secret_key: str, secrets: dict[str, str]) -> bytes:
    return _fernet(secret_key).encrypt(json.dumps(secrets, sort_keys=True).encode())


def unseal(secret_key: str, blob: bytes) -> dict[str, str]:
    try:
        data = json.loads(_fernet(secret_key).decrypt(blob))
    except InvalidToken:
        raise SealError("sealed secrets cannot be opened with ORCH_SECRET_KEY") from None
    return {str(k): str(v) for k, v in data.items()}
