"""Key files: the gateway's Ed25519 signing key and its EVM (secp256k1) transaction key.

Both are stored as one line of hex (the 32-byte Ed25519 seed, or the 32-byte EVM private key),
created with mode 0600. ``mrv-gateway keygen`` writes them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import nacl.exceptions
import nacl.signing

from ledger_client._abi import checksum_address
from ledger_client._errors import KeyFileError
from ledger_client._format import keccak256

log = logging.getLogger("mrv.signing")

_coincurve: ModuleType | None
try:  # libsecp256k1: a declared dependency; without it eth_keys' pure-Python curve signs
    import coincurve as _coincurve
except ImportError:  # pragma: no cover
    _coincurve = None

if TYPE_CHECKING:  # eth_account is imported where an account is made: its import pulls
    # eth_keyfile and py_ecc (about 0.4 s of CPU), which the gateway daemon does not need
    from eth_account.signers.local import LocalAccount


def _read_hex32(path: Path, what: str) -> bytes:
    try:
        text = path.read_text().strip()
    except OSError as e:
        raise KeyFileError(f"cannot read {what} key file {path}: {e.strerror}") from e
    if text.startswith("0x"):
        text = text[2:]
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise KeyFileError(f"{what} key file {path} is not hex") from None
    if len(raw) != 32:
        raise KeyFileError(f"{what} key file {path} holds {len(raw)} bytes, expected 32")
    return raw


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


class Signer:
    """The gateway's Ed25519 identity: signs batch header hashes."""

    __slots__ = ("_key", "public_key")

    def __init__(self, seed: bytes) -> None:
        self._key = nacl.signing.SigningKey(seed)
        self.public_key: bytes = bytes(self._key.verify_key)

    @classmethod
    def load(cls, path: Path) -> Signer:
        return cls(_read_hex32(path, "Ed25519"))

    @classmethod
    def generate(cls, path: Path) -> Signer:
        key = nacl.signing.SigningKey.generate()
        _write_secret(path, bytes(key).hex())
        return cls(bytes(key))

    def sign(self, message: bytes) -> bytes:
        return bytes(self._key.sign(message).signature)


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


def load_account(path: Path) -> LocalAccount:
    from eth_account import Account

    acct: LocalAccount = Account.from_key(_read_hex32(path, "EVM"))
    return acct


def load_tx_key(path: Path) -> TxKey:
    """The EVM key of ``path`` as a `TxKey`: what the gateway's uplink signs with (no
    eth_account import)."""
    key = TxKey(_read_hex32(path, "EVM"))
    if key.backend != "CoinCurveECCBackend":
        log.warning("transactions are signed with %s (pure Python, ~10 ms a signature):"
                    " install coincurve", key.backend)
    return key


def generate_account(path: Path) -> LocalAccount:
    from eth_account import Account

    acct: LocalAccount = Account.create()
    _write_secret(path, acct.key.hex())
    return acct


def _rlp_length(n: int, offset: int) -> bytes:
    if n < 56:
        return bytes((offset + n,))
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((offset + 55 + len(size),)) + size


def _rlp_bytes(b: bytes) -> bytes:
    if len(b) == 1 and b[0] < 0x80:
        return b
    return _rlp_length(len(b), 0x80) + b


def _rlp_list(items: list[int | bytes]) -> bytes:
    """RLP of a flat list of integers (big-endian, no leading zeros) and byte strings: all a
    legacy transaction holds (the ``rlp`` package's generic encoder costs ~0.5 ms a tx)."""
    payload = b"".join(_rlp_bytes(i.to_bytes((i.bit_length() + 7) // 8, "big"))
                       if isinstance(i, int) else _rlp_bytes(i) for i in items)
    return _rlp_length(len(payload), 0xC0) + payload


class TxKey:
    """An EVM private key made once (its public key and address derived once, not per
    transaction) that signs legacy EIP-155 transactions: RLP and Keccak-256 here, secp256k1 in
    coincurve (libsecp256k1) called directly -- the daemon imports no eth_keys / eth_utils
    (with eth_abi, ~5 MB of its peak RSS). Without coincurve installed, eth_keys' pure-Python
    curve signs (imported then, ~10 ms a signature). The same bytes as eth_account's ``sign_transaction`` of
    ``{nonce, gasPrice, gas, to, value, data, chainId}`` (tested)."""

    __slots__ = ("_key", "_sign", "address")

    _key: object
    _sign: Callable[[bytes], bytes]

    def __init__(self, private_key: bytes) -> None:
        if _coincurve is None:  # pragma: no cover - coincurve is a declared dependency
            self._key, self._sign, public = _eth_keys_signer(private_key)
        else:
            try:
                key = _coincurve.PrivateKey(private_key)
            except Exception as e:  # ValueError for 0 or >= the curve order
                raise KeyFileError(f"not a secp256k1 private key: {e}") from None
            self._key = key

            def sign(digest: bytes) -> bytes:  # r (32) || s (32) || recovery id (1)
                return bytes(key.sign_recoverable(digest, hasher=None))
            self._sign = sign
            public = key.public_key.format(compressed=False)[1:]
        self.address: str = checksum_address(keccak256(public)[12:])

    def __repr__(self) -> str:
        return f"TxKey({self.address})"  # never the key

    @property
    def backend(self) -> str:
        """The secp256k1 implementation signing: ``CoinCurveECCBackend`` (libsecp256k1, through
        coincurve) or ``NativeECCBackend`` (eth_keys' pure Python, ~10 ms a signature)."""
        if type(self._key).__module__.startswith("coincurve"):
            return "CoinCurveECCBackend"
        return type(getattr(self._key, "backend", None)).__name__

    def sign_legacy(self, *, nonce: int, gas_price: int, gas: int, to: bytes, value: int,
                    data: bytes, chain_id: int) -> tuple[bytes, bytes]:
        """``(raw_tx, tx_hash)``; ``to`` is 20 bytes, or empty for a deployment."""
        fields: list[int | bytes] = [nonce, gas_price, gas, to, value, data]
        sig = self._sign(keccak256(_rlp_list([*fields, chain_id, 0, 0])))
        r = int.from_bytes(sig[:32], "big")
        s = int.from_bytes(sig[32:64], "big")
        raw = _rlp_list([*fields, sig[64] + 35 + 2 * chain_id, r, s])
        return raw, keccak256(raw)


def _eth_keys_signer(private_key: bytes) -> tuple[object, Callable[[bytes], bytes], bytes]:
    """eth_keys' key (its best backend, resolved once), a signing function giving
    r || s || recovery id, and the 64-byte public key: the fallback without coincurve."""
    from eth_keys.backends import get_backend
    from eth_keys.datatypes import PrivateKey

    try:
        key = PrivateKey(private_key, backend=get_backend())
    except Exception as e:  # eth_keys: ValidationError for 0 or >= the curve order
        raise KeyFileError(f"not a secp256k1 private key: {e}") from None

    def sign(digest: bytes) -> bytes:
        return bytes(key.sign_msg_hash(digest).to_bytes())
    return key, sign, bytes(key.public_key.to_bytes())
