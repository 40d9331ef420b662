"""Ledger administration used by `mrvctl`, the demo and the tests: deploy, register a gateway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from ledger_client._chain import EvmChain, load_artifact
from ledger_client._format import gateway_key


async def deploy_ledger(chain: EvmChain, admin: LocalAccount) -> dict[str, Any]:
    """Deploy the EmissionsLedger; returns the address book (also kept on ``chain``)."""
    address = await chain.deploy(admin)
    art = load_artifact("EmissionsLedger")
    return {
        "chain_id": await chain.chain_id(),
        "rpc_url": chain.rpc_url,
        "admin": admin.address,
        "contracts": {"EmissionsLedger": address},
        "compiler": art["compiler"]["version"],
        "evm_version": art["settings"]["evmVersion"],
    }


def write_address_book(path: Path, book: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(book, indent=2) + "\n")


async def register_gateway(chain: EvmChain, admin: LocalAccount, gateway_id: str,
                           sender: str, signing_key: bytes) -> bytes:
    fn = chain.contract.functions.registerGateway(gateway_id, chain.w3.to_checksum_address(sender),
                                                  signing_key)
    await chain.transact(admin, fn)
    return gateway_key(gateway_id)


async def fund(chain: EvmChain, funder: LocalAccount, to: str, wei: int) -> None:
    """Send ``wei`` to ``to`` (FISCO BCOS with feature_balance and most chains need a balance)."""
    raw, txh, _ = await chain.sign_call(funder, None, to=chain.w3.to_checksum_address(to),
                                        data="0x", value=wei)
    await chain.send_raw(raw)
    await chain.wait_receipt(txh, 60)
