"""Batcher and uplink: cut signed batches from the outbox and anchor them exactly once, in order.

The uplink is a loop over the oldest unconfirmed batch. Each step first asks the chain what it
holds (``lastSeq`` and the header at this seq), so a restart after any crash resumes correctly:

- the chain holds the same header hash  -> count confirmations, then mark it confirmed;
- the chain holds a different header    -> `AnchorConflict`: stop anchoring, raise the alarm;
- the chain is one batch behind         -> sign (or re-send the stored signed) transaction;
- the chain is further behind           -> `AnchorGap`: the chain lost batches; alarm.

The signed raw transaction is stored *before* it is sent, so a crash between send and receipt
re-sends the same bytes (same nonce): the node either already has it or mines it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from ledger_client._chain import EvmChain, call_data, header_tuple
from ledger_client._errors import (
    AnchorConflict,
    AnchorGap,
    ChainRejected,
    ChainRevert,
    ChainUnavailable,
    GatewayMismatch,
)
from ledger_client._outbox import BUILT, SUBMITTED, Outbox, StoredBatch
from mrv_core import Metrics, Record, failpoint, raise_if_cancelling

if TYPE_CHECKING:
    from ledger_client._chain import EvmSigner

log = logging.getLogger("mrv.uplink")


class Co2e(Protocol):
    """Computes a batch's CO2e per scope (grams) from its records; `commit` once it is stored."""

    def stage(self, records: Sequence[Record]) -> tuple[int, int, int]: ...

    def commit(self) -> None: ...


class Batcher:
    """Cuts a batch every ``interval_s`` (or as soon as ``max_records`` are pending)."""

    def __init__(
        self,
        outbox: Outbox,
        sign: Callable[[bytes], bytes],
        *,
        interval_s: float,
        max_records: int,
        metrics: Metrics,
        co2e: Co2e | None = None,
        wake_uplink: asyncio.Event | None = None,
        wake_delivery: asyncio.Event | None = None,
    ) -> None:
        self.wake_delivery = wake_delivery
        self.outbox = outbox
        self.sign = sign
        self.interval_s = interval_s
        self.max_records = max_records
        self.metrics = metrics
        self.co2e = co2e
        self.wake_uplink = wake_uplink or asyncio.Event()
        self.kick = asyncio.Event()

    async def cut_all(self) -> int:
        n = 0
        while True:
            b = await self.outbox.make_batch(self.max_records, self.sign,
                                             self.co2e.stage if self.co2e else None)
            if b is None:
                return n
            if self.co2e is not None:
                self.co2e.commit()
            n += 1
            self.metrics.inc("batches_built")
            log.info("batch %d built: %d records (%d..%d), root 0x%s", b.seq, b.header.count,
                     b.header.first_record_seq, b.header.last_record_seq, b.header.root.hex()[:16])
            self.wake_uplink.set()
            if self.wake_delivery is not None:
                self.wake_delivery.set()
            if b.header.count < self.max_records:
                return n

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self.kick.wait()
            self.kick.clear()
            await self.cut_all()


class Uplink:
    def __init__(
        self,
        outbox: Outbox,
        chain: EvmChain,
        account: EvmSigner,
        *,
        metrics: Metrics,
        confirmations: int = 1,
        receipt_timeout_s: float = 60.0,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        idle_poll_s: float = 1.0,
        wake: asyncio.Event | None = None,
        signing_key: bytes | None = None,
    ) -> None:
        self.signing_key = signing_key
        self._preflight_done = False
        self.outbox = outbox
        self.chain = chain
        self.account = account
        self.metrics = metrics
        self.confirmations = confirmations
        self.receipt_timeout_s = receipt_timeout_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.idle_poll_s = idle_poll_s
        self.wake = wake or asyncio.Event()
        self.gateway_id = outbox.gateway_id

    async def run(self) -> None:
        """Anchor forever. Returns only by raising `AnchorConflict` / `AnchorGap` / a rejection."""
        delay = self.retry_initial_s
        while True:
            raise_if_cancelling()
            try:
                progressed = await self.step()
            except (ChainUnavailable, ChainRejected) as e:
                self.metrics.inc("chain_errors")
                if self.metrics.set_state("uplink", "failing", str(e)):
                    log.warning("chain unavailable, backlog stays in the outbox: %s", e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            except (AnchorConflict, AnchorGap, ChainRevert, GatewayMismatch) as e:
                self.metrics.set_state("uplink", "alarm", str(e))
                self.metrics.inc("anchor_alarms")
                log.critical("anchoring stopped: %s", e)
                raise
            if self.metrics.set_state("uplink", "ok"):
                log.info("chain reachable, anchoring")
            delay = self.retry_initial_s
            if not progressed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.idle_poll_s):
                        await self.wake.wait()
                self.wake.clear()

    async def preflight(self) -> None:
        """Check once that the chain knows this gateway with our keys."""
        try:
            g = await self.chain.gateway(self.gateway_id)
        except ChainRevert as e:
            raise GatewayMismatch(
                f"gateway {self.gateway_id!r} is not registered on the ledger at"
                f" {self.chain.address} ({e.name})") from e
        if g.sender.lower() != self.account.address.lower():
            raise GatewayMismatch(
                f"the ledger expects transactions for {self.gateway_id!r} from {g.sender},"
                f" this gateway's account is {self.account.address}")
        if self.signing_key is not None and g.signing_key != self.signing_key:
            raise GatewayMismatch(
                f"the ledger holds signing key 0x{g.signing_key.hex()} for {self.gateway_id!r},"
                f" this gateway's key is 0x{self.signing_key.hex()}")
        if not g.active:
            raise GatewayMismatch(f"gateway {self.gateway_id!r} is revoked on the ledger")
        self._preflight_done = True

    async def step(self) -> bool:
        """One move of the oldest unconfirmed batch; True when something changed."""
        if not self._preflight_done:
            await self.preflight()
        b = await self.outbox.oldest_unconfirmed()
        if b is None:
            return False
        on_chain_last = await self.chain.last_seq(self.gateway_id)
        if on_chain_last >= b.seq:
            return await self._settle(b)
        if on_chain_last < b.seq - 1:
            raise AnchorGap(
                f"the chain's last batch for {self.gateway_id} is {on_chain_last}, but the outbox"
                f" has batches up to {b.seq - 1} confirmed: was the chain reset?")
        await self._send(b)
        return True

    async def _settle(self, b: StoredBatch) -> bool:
        held = await self.chain.batch(self.gateway_id, b.seq)
        if held.header_hash != b.header_hash:
            raise AnchorConflict(b.seq, held.header_hash, b.header_hash)
        head = await self.chain.block_number()
        if head - held.block_number + 1 < self.confirmations:
            await asyncio.sleep(0.2)
            return False
        await self.outbox.mark_confirmed(b.seq, held.block_number)
        self.metrics.inc("batches_anchored")
        self.metrics.inc("records_anchored", b.header.count)
        log.info("batch %d anchored in block %d (%d records)", b.seq, held.block_number,
                 b.header.count)
        return True

    async def _send(self, b: StoredBatch) -> None:
        raw = b.raw_tx
        tx_hash = b.tx_hash
        if b.state == SUBMITTED and raw is not None and tx_hash is not None:
            log.info("batch %d: re-sending stored transaction 0x%s", b.seq, tx_hash.hex())
        else:
            assert b.state == BUILT
            fn = self.chain.contract.functions.anchorBatch(header_tuple(b.header), b.signature)
            try:
                raw, tx_hash, nonce = await self.chain.sign_call(self.account, fn)
            except ChainRevert as e:
                if e.name == "BatchAlreadyAnchored":
                    return  # the next step settles it
                raise
            await self.outbox.mark_submitted(b.seq, tx_hash, raw, nonce)
        failpoint("uplink.before_send")
        try:
            await self.chain.send_raw(raw)
        except ChainRejected as e:
            # The node refused the bytes (nonce too low, already known, underpriced). If the
            # batch is not on-chain now, sign afresh on the next step.
            log.warning("batch %d: node refused the stored transaction (%s)", b.seq, e)
            if await self.chain.last_seq(self.gateway_id) < b.seq:
                await self.outbox.reset_to_built(b.seq)
            return
        self.metrics.inc("transactions_sent")
        failpoint("uplink.after_send")
        r = await self.chain.wait_receipt(tx_hash, self.receipt_timeout_s)
        failpoint("uplink.after_receipt")
        if r.status != 1:
            data = call_data(self.chain.contract.functions.anchorBatch(
                header_tuple(b.header), b.signature))
            err = await self.chain.replay_revert(self.account.address, data, r.block_number)
            if err.name == "BatchAlreadyAnchored":
                return
            raise err
