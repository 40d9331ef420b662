"""Outbox, batching, signing and the chain uplink; proofs for auditors."""

# First: py_ecc is imported with its recursion-limit side effect undone (see _deps).
from ledger_client import _deps  # noqa: F401, I001

import importlib
from typing import TYPE_CHECKING, Any

from ledger_client._audit import audit_outbox
from ledger_client._chain import EvmChain, call_data, header_tuple, load_artifact
from ledger_client._delivery import (
    DEFAULT_MAX_BODY_BYTES,
    INGEST_PATH,
    MAX_SUBMISSION_RECORDS,
    Delivery,
    submission_bytes,
    submission_json,
)
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
    ZERO32,
    BatchHeader,
    build_header,
    gateway_key,
    keccak256,
    merkle_proof,
    merkle_root,
    reading_leaf,
    record_leaf,
    record_signing_bytes,
    value_bits,
    verify_proof,
)
from ledger_client._outbox import DeadLetter, DeliveryStats, Outbox, dump_record, unstorable
from ledger_client._signing import (
    Signer,
    TxKey,
    generate_account,
    load_account,
    load_tx_key,
    verify_signature,
)
from ledger_client._uplink import Batcher, Uplink
from ledger_client._verify import (
    MAX_BUNDLE_BYTES,
    Bundle,
    BundleError,
    RecordMissing,
    Report,
    batch_from_json,
    batch_to_json,
    bundle_from_outbox,
    describe,
    parse_bundle,
    record_from_json_checked,
    record_to_json,
    verify_bundle,
)

if TYPE_CHECKING:
    from ledger_client._admin import (
        AddressBookError,
        Compliance,
        Event,
        FindingKind,
        FindingStatus,
        Mrv,
        deploy_system,
        fund,
        make_uscc,
        read_address_book,
        write_address_book,
    )
    from ledger_client._portal_login import PortalRefused, portal_login_link

#: Imported on first use: these modules import eth_account, whose own import (eth_keyfile,
#: py_ecc) costs about 0.4 s of CPU that the gateway daemon, which signs with `TxKey`, never needs.
_LAZY = {
    **dict.fromkeys(["AddressBookError", "Compliance", "Event", "FindingKind", "FindingStatus",
                     "Mrv", "deploy_system", "fund", "make_uscc", "read_address_book",
                     "write_address_book"], "ledger_client._admin"),
    **dict.fromkeys(["PortalRefused", "portal_login_link"], "ledger_client._portal_login"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ledger_client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "INGEST_PATH",
    "MAX_BUNDLE_BYTES",
    "MAX_SUBMISSION_RECORDS",
    "ZERO32",
    "AddressBookError",
    "AnchorConflict",
    "AnchorGap",
    "BatchHeader",
    "Batcher",
    "Bundle",
    "BundleError",
    "ChainRejected",
    "ChainRevert",
    "ChainUnavailable",
    "Compliance",
    "DeadLetter",
    "Delivery",
    "DeliveryStats",
    "Event",
    "EvmChain",
    "FindingKind",
    "FindingStatus",
    "GatewayMismatch",
    "KeyFileError",
    "LedgerError",
    "Mrv",
    "Outbox",
    "OutboxError",
    "PortalRefused",
    "RecordMissing",
    "Report",
    "Signer",
    "TxKey",
    "Uplink",
    "audit_outbox",
    "batch_from_json",
    "batch_to_json",
    "build_header",
    "bundle_from_outbox",
    "call_data",
    "deploy_system",
    "describe",
    "dump_record",
    "fund",
    "gateway_key",
    "generate_account",
    "header_tuple",
    "keccak256",
    "load_account",
    "load_artifact",
    "load_tx_key",
    "make_uscc",
    "merkle_proof",
    "merkle_root",
    "parse_bundle",
    "portal_login_link",
    "read_address_book",
    "reading_leaf",
    "record_from_json_checked",
    "record_leaf",
    "record_signing_bytes",
    "record_to_json",
    "submission_bytes",
    "submission_json",
    "unstorable",
    "value_bits",
    "verify_bundle",
    "verify_proof",
    "verify_signature",
    "write_address_book",
]
