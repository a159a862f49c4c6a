"""Sealing a secret for one node: what a directive carries when it hands an agent a credential.

Layer: protocol (pure: the nonce is passed in). Directives already travel over the controller's TLS and are
signed with the node's key (`protocol.signing`); a sealed value is also unreadable to whatever sees the
directive itself (a log of a response, a TLS-terminating proxy, a controller on plain loopback HTTP).
The cipher is HMAC-SHA256 as a PRF in counter mode (a stream cipher from the standard library: the agent
imports no crypto package) with a key derived from the node's key under its own label, and a fresh 16-byte
nonce per seal; the directive's signature covers nonce and ciphertext (encrypt-then-MAC), so a changed byte
is refused before anything is unsealed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

NONCE_BYTES = 16
MAX_SEALED_BYTES = 4096


def _keystream(key: bytes, nonce: bytes, size: int) -> bytes:
    seal_key = hmac.new(key, b"redwarden seal v1", hashlib.sha256).digest()
    blocks = [hmac.new(seal_key, nonce + i.to_bytes(4, "big"), hashlib.sha256).digest()
              for i in range((size + 31) // 32)]
    return b"".join(blocks)[:size]


def seal(key: bytes, nonce: bytes, plaintext: str) -> str:
    """`plaintext` for the holder of `key`: base64 of nonce and ciphertext. `nonce`: 16 fresh random bytes."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError("the nonce must be 16 bytes")
    data = plaintext.encode()
    if len(data) > MAX_SEALED_BYTES:
        raise ValueError("too much to seal")
    cipher = bytes(a ^ b for a, b in zip(data, _keystream(key, nonce, len(data)), strict=True))
    return base64.b64encode(nonce + cipher).decode()


def unseal(key: bytes, sealed: str) -> str | None:
    """The plaintext, or None when `sealed` is not a value `seal` made (never an exception quoting it)."""
    try:
        raw = base64.b64decode(sealed.encode(), validate=True)
    except (ValueError, UnicodeEncodeError):
        return None
    if len(raw) <= NONCE_BYTES or len(raw) > NONCE_BYTES + MAX_SEALED_BYTES:
        return None
    nonce, cipher = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
    try:
        return bytes(a ^ b for a, b in zip(cipher, _keystream(key, nonce, len(cipher)), strict=True)).decode()
    except UnicodeDecodeError:
        return None
