"""Outbox, batching, signing and the chain uplink; proofs for auditors."""

# First: py_ecc is imported with its recursion-limit side effect undone (see _deps).
from ledger_client import _deps  # noqa: F401
from ledger_client._chain import EvmChain
from ledger_client._errors import (
    AnchorConflict,
    AnchorGap,
    ChainRejected,
    ChainRevert,
    ChainUnavailable,
    GatewayMismatch,
    KeyFileError,
    LedgerError,
    OutboxError,
)
from ledger_client._format import (
    BatchHeader,
    gateway_key,
    merkle_proof,
    merkle_root,
    reading_leaf,
    record_leaf,
)
from ledger_client._outbox import Outbox
from ledger_client._signing import Signer, load_account
from ledger_client._uplink import Batcher, Uplink
from ledger_client._verify import Bundle, Report, bundle_from_outbox, verify_bundle

__all__ = [
    "AnchorConflict",
    "AnchorGap",
    "BatchHeader",
    "Batcher",
    "Bundle",
    "ChainRejected",
    "ChainRevert",
    "ChainUnavailable",
    "EvmChain",
    "GatewayMismatch",
    "KeyFileError",
    "LedgerError",
    "Outbox",
    "OutboxError",
    "Report",
    "Signer",
    "Uplink",
    "bundle_from_outbox",
    "gateway_key",
    "load_account",
    "merkle_proof",
    "merkle_root",
    "reading_leaf",
    "record_leaf",
    "verify_bundle",
]
