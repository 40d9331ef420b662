"""Errors of the ledger client. Each carries what a user needs to act on it."""

from __future__ import annotations

from mrv_core import FatalError


class LedgerError(Exception):
    """Base of every ledger-client error."""


class KeyFileError(LedgerError):
    """A key file is missing, unreadable or malformed."""


class OutboxError(LedgerError):
    """The outbox database is unusable (wrong gateway, schema, or broken invariant)."""


class AbiError(LedgerError, ValueError):
    """A value does not fit its Solidity ABI type, or bytes are not a valid ABI encoding."""


class AbiEncodeError(AbiError):
    """A value cannot be ABI-encoded as its type (wrong Python type, out of range, wrong length)."""


class AbiDecodeError(AbiError):
    """Bytes (a node's answer: untrusted) are no strict ABI encoding of the types asked for."""


class ChainUnavailable(LedgerError):
    """The chain node did not answer (connection refused, timeout, HTTP error)."""


class ChainRejected(LedgerError):
    """The node answered with a JSON-RPC error (nonce too low, underpriced, no funds...)."""


class ChainRevert(LedgerError, FatalError):
    """A call or transaction reverted; ``name`` and ``args`` decode the contract's custom error."""

    def __init__(self, name: str, args: tuple[object, ...], data: str = "") -> None:
        self.name = name
        self.args_ = args
        self.data = data
        shown = ", ".join(a.hex() if isinstance(a, bytes) else str(a) for a in args)
        super().__init__(f"reverted: {name}({shown})")


class AnchorConflict(LedgerError, FatalError):
    """The chain holds a different batch at a seq this outbox has built. Never overwritten:
    an operator must investigate (a second gateway with the same key, or a restored backup)."""

    def __init__(self, seq: int, on_chain: bytes, local: bytes) -> None:
        self.seq = seq
        self.on_chain = on_chain
        self.local = local
        super().__init__(
            f"batch {seq}: the chain holds header 0x{on_chain.hex()}, "
            f"the outbox built 0x{local.hex()}; anchoring stopped"
        )


class AnchorGap(LedgerError, FatalError):
    """The chain lacks batches the outbox counts as anchored (e.g. the chain was reset)."""


class GatewayMismatch(LedgerError, FatalError):
    """The chain's registration of this gateway does not match its keys (or it is revoked)."""
