"""Shared set-up for the contract tests (no tests here): a fresh deployment of the five
contracts per test, every role with its own key, two certified enterprises with a gateway each,
period 1 = 2024 (ended, closable) and period 2 = 2025..2100 (open)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger_client import ChainRevert, EvmChain, Signer
from ledger_client._admin import Event, Mrv, deploy_system, fund, make_uscc
from ledger_client._chain import header_tuple
from ledger_client._format import ZERO32, BatchHeader, build_header, keccak256
from simulator import DEV_KEYS

T = 1_000_000  # grams per tonne


def ns(y: int, m: int = 1, d: int = 1) -> int:
    return int(dt.datetime(y, m, d, tzinfo=dt.UTC).timestamp()) * 10**9


P2024 = (ns(2024), ns(2025))
P_OPEN = (ns(2025), ns(2100))


def new_account() -> LocalAccount:
    acct: LocalAccount = Account.create()
    return acct


@dataclass
class Gw:
    gateway_id: str
    account: LocalAccount
    signer: Signer
    headers: list[BatchHeader] = field(default_factory=list)
    next_record: int = 1

    def header(self, ts_ns: int, n: int = 3, co2e: tuple[int, int, int] = (0, 0, 0),
               leaves: list[bytes] | None = None) -> BatchHeader:
        """The next header of this gateway (not yet anchored)."""
        leaves = leaves or [keccak256(f"{self.gateway_id}/{self.next_record + i}".encode())
                            for i in range(n)]
        prev = self.headers[-1].hash() if self.headers else ZERO32
        return build_header(
            gateway_id=self.gateway_id, seq=len(self.headers) + 1, prev_hash=prev,
            records=[(self.next_record + i, ts_ns + i, leaf) for i, leaf in enumerate(leaves)],
            co2e_g=co2e)

    async def anchor(self, mrv: Mrv, h: BatchHeader, sender: LocalAccount | None = None
                     ) -> list[Event]:
        fn = mrv.ledger.functions.anchorBatch(header_tuple(h), self.signer.sign(h.hash()))
        _, ev = await mrv.send(sender or self.account, fn)
        self.headers.append(h)
        self.next_record = h.last_record_seq + 1
        return ev


@dataclass
class Sys:
    mrv: Mrv
    regulator: LocalAccount
    gov: LocalAccount
    gov2: LocalAccount
    auditor: LocalAccount
    finance: LocalAccount
    a: LocalAccount
    b: LocalAccount
    stranger: LocalAccount
    gw_a: Gw
    gw_b: Gw

    @property
    def addr(self) -> dict[str, str]:
        return self.mrv.addresses

    async def call(self, fn: Any) -> Any:
        return await self.mrv.call(fn)

    @property
    def reg(self) -> Any:
        return self.mrv.registry

    @property
    def led(self) -> Any:
        return self.mrv.ledger

    @property
    def alw(self) -> Any:
        return self.mrv.allowances

    @property
    def ver(self) -> Any:
        return self.mrv.verification

    @property
    def mkt(self) -> Any:
        return self.mrv.market


async def fresh_system(rpc_url: str, *, periods: bool = True, gateways: bool = True) -> Sys:
    regulator: LocalAccount = Account.from_key(DEV_KEYS[0])
    chain = EvmChain(rpc_url)
    book = await deploy_system(chain, regulator)
    mrv = Mrv(chain, book["contracts"])
    accts = {n: new_account() for n in ("gov", "gov2", "auditor", "finance", "a", "b",
                                        "stranger", "gwa", "gwb")}
    for acct in accts.values():
        await fund(chain, regulator, acct.address, 10**18)
    for role, who in (("government", "gov"), ("government", "gov2"), ("auditor", "auditor"),
                      ("finance", "finance")):
        await mrv.grant(regulator, role, accts[who].address)
    for who, name, ind in (("a", "Pearl River Power", "D4411"), ("b", "Lingnan Cement", "C3011")):
        await mrv.certify(accts["gov"], accts[who].address,
                          credit_code=make_uscc(accts[who].address.encode()), name=name,
                          industry=ind, region="440300")
    if periods:
        await mrv.define_period(accts["gov"], *P2024)
        await mrv.define_period(accts["gov"], *P_OPEN)
    s = Sys(mrv, regulator, accts["gov"], accts["gov2"], accts["auditor"], accts["finance"],
            accts["a"], accts["b"], accts["stranger"],
            Gw("gw-a", accts["gwa"], Signer(b"\x0a" * 32)),
            Gw("gw-b", accts["gwb"], Signer(b"\x0b" * 32)))
    if gateways:
        await mrv.reserve_gateway_id(s.gov, "gw-a", s.a.address)
        await mrv.reserve_gateway_id(s.gov, "gw-b", s.b.address)
        await mrv.register_gateway(s.a, "gw-a", s.gw_a.account.address, s.gw_a.signer.public_key)
        await mrv.register_gateway(s.b, "gw-b", s.gw_b.account.address, s.gw_b.signer.public_key)
    return s


async def reverts(aw: Awaitable[Any], name: str, *args: object) -> ChainRevert:
    """Await ``aw``, expect a revert with custom error ``name`` (and ``args`` when given)."""
    with pytest.raises(ChainRevert) as ei:
        await aw
    assert ei.value.name == name, ei.value
    if args:
        assert ei.value.args_ == args, ei.value
    return ei.value


def names(events: list[Event]) -> list[str]:
    return [e.name for e in events]
