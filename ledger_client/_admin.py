"""Ledger administration used by `mrvctl`, the demo and the tests.

`deploy_system` deploys the five contracts (registry, emissions ledger, allowances,
verification, market) and wires them; `Mrv` wraps a deployment with one method per
role action, each signed by the acting role's own key, and decodes the events of every receipt.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger_client._chain import EvmChain, Receipt, _type_str, load_artifact
from ledger_client._errors import ChainRevert
from ledger_client._format import gateway_key, keccak256
from mrv_core import json_depth

if TYPE_CHECKING:  # eth_account is imported where an account is made (its import costs ~0.4 s)
    from eth_account.signers.local import LocalAccount

REGISTRY = "MrvRegistry"
LEDGER = "EmissionsLedger"
ALLOWANCES = "Allowances"
VERIFICATION = "Verification"
MARKET = "Market"
CONTRACTS = (REGISTRY, LEDGER, ALLOWANCES, VERIFICATION, MARKET)

#: Role ids of the registry (OpenZeppelin AccessControl); "regulator" is DEFAULT_ADMIN_ROLE.
ROLES: dict[str, bytes] = {
    "regulator": b"\x00" * 32,
    "government": keccak256(b"GOVERNMENT_ROLE"),
    "auditor": keccak256(b"AUDITOR_ROLE"),
    "finance": keccak256(b"FINANCE_ROLE"),
    "market-contract": keccak256(b"MARKET_CONTRACT_ROLE"),
    "verification-contract": keccak256(b"VERIFICATION_CONTRACT_ROLE"),
}
ROLE_NAMES = {v: k for k, v in ROLES.items()}
GRAMS_PER_TONNE = 1_000_000


class EnterpriseStatus(enum.IntEnum):
    NONE = 0
    ACTIVE = 1
    SUSPENDED = 2


class Compliance(enum.IntEnum):
    OPEN = 0
    UNVERIFIED = 1
    COMPLIANT = 2
    NON_COMPLIANT = 3


class FindingKind(enum.IntEnum):
    NONE = 0
    ABNORMAL = 1
    FALSIFIED = 2


class FindingStatus(enum.IntEnum):
    NONE = 0
    FILED = 1
    CONFIRMED = 2
    REJECTED = 3


class OfferStatus(enum.IntEnum):
    NONE = 0
    OPEN = 1
    FILLED = 2
    CANCELLED = 3


# -- unified social credit codes (GB 32100-2015) ---------------------------------------------

_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def uscc_check_char(first17: str) -> str:
    """The check character of a unified social credit code from its first 17 characters."""
    if len(first17) != 17 or any(c not in _USCC_CHARS for c in first17):
        raise ValueError(f"{first17!r}: expected 17 characters of {_USCC_CHARS}")
    s = sum(_USCC_CHARS.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return _USCC_CHARS[(31 - s % 31) % 31]


def validate_uscc(code: str) -> str:
    """``code`` upper-cased if it is a well-formed 18-character code with a correct check
    character; ValueError naming what is wrong otherwise."""
    c = code.strip().upper()
    if len(c) != 18:
        raise ValueError(f"credit code {code!r}: expected 18 characters, got {len(c)}")
    bad = [ch for ch in c if ch not in _USCC_CHARS]
    if bad:
        raise ValueError(f"credit code {code!r}: characters {''.join(bad)!r} are not allowed"
                         " (I, O, Z, S, V are never used)")
    if uscc_check_char(c[:17]) != c[17]:
        raise ValueError(f"credit code {code!r}: check character should be"
                         f" {uscc_check_char(c[:17])!r}")
    return c


def make_uscc(seed: bytes, prefix: str = "91440300") -> str:
    """A well-formed credit code derived from ``seed`` (for simulations and tests only)."""
    h = keccak256(seed)
    body = prefix + "".join(_USCC_CHARS[b % 31] for b in h[: 17 - len(prefix)])
    return body + uscc_check_char(body)


# -- deployment --------------------------------------------------------------------------------


async def deploy_system(chain: EvmChain, regulator: LocalAccount) -> dict[str, Any]:
    """Deploy and wire the five contracts; ``regulator`` becomes the registry's admin.

    Returns the address book (keys "chain_id" and "contracts.EmissionsLedger" are what the
    gateway reads); ``chain`` is left pointing at the EmissionsLedger."""
    registry = await chain.deploy_artifact(regulator, REGISTRY, (regulator.address,))
    ledger = await chain.deploy_artifact(regulator, LEDGER)
    allowances = await chain.deploy_artifact(regulator, ALLOWANCES, (registry,))
    verification = await chain.deploy_artifact(regulator, VERIFICATION,
                                               (registry, ledger, allowances))
    market = await chain.deploy_artifact(regulator, MARKET, (registry, allowances))
    reg = chain.contract_at(REGISTRY, registry)
    await chain.transact(regulator, chain.contract_at(LEDGER, ledger).functions.bindRegistry(
        registry))
    await chain.transact(regulator, reg.functions.grantRole(ROLES["market-contract"], market))
    await chain.transact(regulator, reg.functions.grantRole(ROLES["verification-contract"],
                                                            verification))
    chain.address = chain.w3.to_checksum_address(ledger)
    art = load_artifact(LEDGER)
    return {
        "chain_id": await chain.chain_id(),
        "rpc_url": chain.rpc_url,
        "admin": regulator.address,
        "contracts": {REGISTRY: registry, LEDGER: ledger, ALLOWANCES: allowances,
                      VERIFICATION: verification, MARKET: market},
        "compiler": art["compiler"]["version"],
        "evm_version": art["settings"]["evmVersion"],
    }


async def deploy_ledger(chain: EvmChain, admin: LocalAccount) -> dict[str, Any]:
    """Deploy the whole system (the ledger alone cannot work without its registry)."""
    return await deploy_system(chain, admin)


def write_address_book(path: Path, book: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(book, indent=2) + "\n")


#: Limits applied to an address book before it is parsed (it comes from outside: a file handed
#: over by the operator of the ledger).
MAX_ADDRESS_BOOK_BYTES = 1 << 20
MAX_ADDRESS_BOOK_DEPTH = 8
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class AddressBookError(ValueError):
    """An address book that is too large, too deep, not JSON or not an address book."""


def parse_address_book(raw: bytes | str, source: str = "address book") -> dict[str, Any]:
    """An address book from its JSON text, checked: at most `MAX_ADDRESS_BOOK_BYTES` and
    `MAX_ADDRESS_BOOK_DEPTH` levels (both before parsing), an object whose ``contracts`` maps
    names to 0x-addresses, ``chain_id`` (when present) a positive integer below 2**63 and
    ``rpc_url`` (when present) a string. `AddressBookError` (a ValueError) otherwise."""
    if len(raw) > MAX_ADDRESS_BOOK_BYTES:
        raise AddressBookError(f"{source}: larger than {MAX_ADDRESS_BOOK_BYTES} bytes")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as e:
        raise AddressBookError(f"{source}: not UTF-8 ({e.reason} at byte {e.start})") from None
    if json_depth(text.encode(), stop_at=MAX_ADDRESS_BOOK_DEPTH) > MAX_ADDRESS_BOOK_DEPTH:
        raise AddressBookError(f"{source}: nested deeper than {MAX_ADDRESS_BOOK_DEPTH} levels")
    try:
        book = json.loads(text)
    except ValueError as e:  # JSONDecodeError, or an integer of too many digits
        raise AddressBookError(f"{source}: not JSON ({e})") from None
    if not isinstance(book, dict) or not isinstance(book.get("contracts"), dict):
        raise AddressBookError(f"{source}: not an address book (no 'contracts' object)")
    for name, addr in book["contracts"].items():
        if not isinstance(addr, str) or not _ADDRESS.fullmatch(addr):
            raise AddressBookError(f"{source}: contracts.{name} is not a 0x-prefixed 20-byte"
                                   " address")
    cid = book.get("chain_id")
    if cid is not None and (type(cid) is not int or not 0 < cid < 2**63):
        raise AddressBookError(f"{source}: chain_id must be a positive integer below 2**63")
    url = book.get("rpc_url")
    if url is not None and not isinstance(url, str):
        raise AddressBookError(f"{source}: rpc_url must be a string")
    return book


def read_address_book(path: Path) -> dict[str, Any]:
    """`parse_address_book` of the file at ``path`` (its size checked before it is read)."""
    if path.stat().st_size > MAX_ADDRESS_BOOK_BYTES:
        raise AddressBookError(f"{path}: larger than {MAX_ADDRESS_BOOK_BYTES} bytes")
    return parse_address_book(path.read_bytes(), str(path))


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    contract: str
    name: str
    args: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.args[key]


def _event_topics(artifact: str) -> dict[bytes, str]:
    out: dict[bytes, str] = {}
    for item in load_artifact(artifact)["abi"]:
        if item.get("type") == "event":
            sig = f"{item['name']}({','.join(_type_str(i) for i in item['inputs'])})"
            out[keccak256(sig.encode())] = item["name"]
    return out


def _plain(v: Any) -> Any:
    """Event arguments as plain Python values (bytes, not HexBytes; dicts, not AttributeDicts)."""
    if isinstance(v, bytes):
        return bytes(v)
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return tuple(_plain(x) for x in v)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


# -- the system ------------------------------------------------------------------------------


class Mrv:
    """A deployed system on one endpoint. ``chain`` points at the EmissionsLedger (what the
    gateway uses); the other contracts are reached through the address book."""

    def __init__(self, chain: EvmChain, contracts: dict[str, str]) -> None:
        self.chain = chain
        self.addresses = {k: chain.w3.to_checksum_address(v) for k, v in contracts.items()}
        if LEDGER in self.addresses:
            chain.address = self.addresses[LEDGER]
        self._topics = {name: _event_topics(name) for name in CONTRACTS}
        self._by_address = {a.lower(): n for n, a in self.addresses.items()}

    @classmethod
    def from_book(cls, rpc_url: str, book: dict[str, Any], **chain_kw: Any) -> Mrv:
        contracts = {k: str(v) for k, v in book["contracts"].items() if k in CONTRACTS}
        if LEDGER not in contracts:
            raise ValueError("address book has no contracts.EmissionsLedger")
        return cls(EvmChain(rpc_url, contract_address=contracts[LEDGER], **chain_kw), contracts)

    @classmethod
    async def attach(cls, chain: EvmChain) -> Mrv:
        """From a chain that points at an EmissionsLedger: finds its registry."""
        ledger = chain.contract
        registry = await chain._rpc(ledger.functions.registry().call())
        return cls(chain, {LEDGER: str(ledger.address), REGISTRY: str(registry)})

    async def close(self) -> None:
        await self.chain.close()

    def c(self, name: str) -> Any:
        """The contract object of ``name`` (one of `CONTRACTS`)."""
        if name not in self.addresses:
            raise ValueError(f"the address book has no {name} address")
        return self.chain.contract_at(name, self.addresses[name])

    @property
    def registry(self) -> Any:
        return self.c(REGISTRY)

    @property
    def ledger(self) -> Any:
        return self.c(LEDGER)

    @property
    def allowances(self) -> Any:
        return self.c(ALLOWANCES)

    @property
    def verification(self) -> Any:
        return self.c(VERIFICATION)

    @property
    def market(self) -> Any:
        return self.c(MARKET)

    async def call(self, fn: Any) -> Any:
        return await self.chain._rpc(fn.call())

    async def send(self, account: LocalAccount, fn: Any) -> tuple[Receipt, list[Event]]:
        r = await self.chain.transact(account, fn)
        return r, self.events(r)

    def events(self, receipt: Receipt) -> list[Event]:
        """The events of our contracts in ``receipt``, decoded, in log order."""
        out: list[Event] = []
        for log in receipt.logs:
            name = self._by_address.get(str(log["address"]).lower())
            topics = log.get("topics") or []
            if name is None or not topics:
                continue
            ev = self._topics[name].get(bytes(topics[0]))
            if ev is None:
                continue
            data = self.c(name).events[ev]().process_log(log)
            out.append(Event(name, ev, {k: _plain(v) for k, v in dict(data["args"]).items()}))
        return out

    @staticmethod
    def _one(events: list[Event], name: str) -> Event:
        found = [e for e in events if e.name == name]
        if len(found) != 1:
            raise RuntimeError(f"expected one {name} event, got {len(found)}")
        return found[0]

    # -- regulator ---------------------------------------------------------------------------

    async def grant(self, regulator: LocalAccount, role: str, account: str) -> list[Event]:
        _, ev = await self.send(regulator, self.registry.functions.grantRole(
            ROLES[role], self.chain.w3.to_checksum_address(account)))
        return ev

    async def revoke_role(self, regulator: LocalAccount, role: str, account: str) -> list[Event]:
        _, ev = await self.send(regulator, self.registry.functions.revokeRole(
            ROLES[role], self.chain.w3.to_checksum_address(account)))
        return ev

    async def has_role(self, role: str, account: str) -> bool:
        return bool(await self.call(self.registry.functions.hasRole(
            ROLES[role], self.chain.w3.to_checksum_address(account))))

    async def roles_of(self, account: str) -> list[str]:
        return [r for r in ROLES if await self.has_role(r, account)]

    # -- government: enterprises and calendar ------------------------------------------------

    async def certify(self, gov: LocalAccount, account: str, *, credit_code: str, name: str,
                      industry: str, region: str) -> list[Event]:
        _, ev = await self.send(gov, self.registry.functions.certifyEnterprise(
            self.chain.w3.to_checksum_address(account), (credit_code, name, industry, region)))
        return ev

    async def suspend(self, gov: LocalAccount, account: str, reason: str) -> list[Event]:
        _, ev = await self.send(gov, self.registry.functions.suspendEnterprise(
            self.chain.w3.to_checksum_address(account), reason))
        return ev

    async def reinstate(self, gov: LocalAccount, account: str) -> list[Event]:
        _, ev = await self.send(gov, self.registry.functions.reinstateEnterprise(
            self.chain.w3.to_checksum_address(account)))
        return ev

    async def define_period(self, gov: LocalAccount, start_ns: int, end_ns: int) -> int:
        _, ev = await self.send(gov, self.registry.functions.definePeriod(start_ns, end_ns))
        return int(self._one(ev, "PeriodDefined")["period"])

    async def close_period(self, gov: LocalAccount, period: int) -> list[Event]:
        _, ev = await self.send(gov, self.registry.functions.closePeriod(period))
        return ev

    # -- gateways: government reserves the id, the enterprise registers it ----------------------

    async def reserve_gateway_id(self, gov: LocalAccount, gateway_id: str,
                                 enterprise: str) -> Event:
        """Government reserves ``gateway_id`` for ``enterprise`` (only it may register it)."""
        _, ev = await self.send(gov, self.registry.functions.reserveGatewayId(
            gateway_id, self.chain.w3.to_checksum_address(enterprise)))
        return self._one(ev, "GatewayIdReserved")

    async def gateway_reserved_for(self, gateway_id: str) -> str | None:
        """The enterprise ``gateway_id`` is reserved for, or None."""
        a = str(await self.call(self.registry.functions.gatewayReservedFor(
            gateway_key(gateway_id))))
        return None if int(a, 16) == 0 else a

    async def register_gateway(self, enterprise: LocalAccount, gateway_id: str, sender: str,
                               signing_key: bytes) -> bytes:
        _, ev = await self.send(enterprise, self.registry.functions.registerGateway(
            gateway_id, self.chain.w3.to_checksum_address(sender), signing_key))
        return bytes(self._one(ev, "GatewayRegistered")["gatewayKey"])

    async def revoke_gateway(self, account: LocalAccount, gateway_id: str) -> list[Event]:
        _, ev = await self.send(account, self.registry.functions.revokeGateway(
            gateway_key(gateway_id)))
        return ev

    # -- enterprises: consent for financial institutions -----------------------------------------

    async def grant_data_access(self, enterprise: LocalAccount, finance: str,
                                until_s: int) -> Event:
        """The enterprise lets ``finance`` (a FINANCE_ROLE holder) read its data until
        ``until_s`` (block seconds, in the future); granting again replaces the end."""
        _, ev = await self.send(enterprise, self.registry.functions.grantDataAccess(
            self.chain.w3.to_checksum_address(finance), until_s))
        return self._one(ev, "DataAccessGranted")

    async def revoke_data_access(self, enterprise: LocalAccount, finance: str) -> Event:
        _, ev = await self.send(enterprise, self.registry.functions.revokeDataAccess(
            self.chain.w3.to_checksum_address(finance)))
        return self._one(ev, "DataAccessRevoked")

    async def data_access_until(self, enterprise: str, finance: str) -> int:
        """The end (block seconds) of the enterprise's grant to ``finance``; 0 when none."""
        return int(await self.call(self.registry.functions.dataAccessUntil(
            self.chain.w3.to_checksum_address(enterprise),
            self.chain.w3.to_checksum_address(finance))))

    async def has_data_access(self, enterprise: str, finance: str) -> bool:
        return bool(await self.call(self.registry.functions.hasDataAccess(
            self.chain.w3.to_checksum_address(enterprise),
            self.chain.w3.to_checksum_address(finance))))

    # -- allowances ------------------------------------------------------------------------------

    async def set_benchmark(self, gov: LocalAccount, period: int, industry: str,
                            grams_per_unit: int) -> list[Event]:
        _, ev = await self.send(gov, self.allowances.functions.setBenchmark(
            period, industry, grams_per_unit))
        return ev

    async def allocate(self, gov: LocalAccount, enterprise: str, period: int, amount_g: int,
                       *, by_output: bool = False) -> Event:
        """Allocate ``amount_g`` grams, or with ``by_output`` treat it as the output to
        multiply by the industry benchmark."""
        fns = self.allowances.functions
        addr = self.chain.w3.to_checksum_address(enterprise)
        fn = (fns.allocateByBenchmark(addr, period, amount_g) if by_output
              else fns.allocate(addr, period, amount_g))
        _, ev = await self.send(gov, fn)
        return self._one(ev, "Allocated")

    async def transfer(self, enterprise: LocalAccount, period: int, to: str,
                       amount_g: int) -> list[Event]:
        _, ev = await self.send(enterprise, self.allowances.functions.transfer(
            period, self.chain.w3.to_checksum_address(to), amount_g))
        return ev

    async def surrender(self, enterprise: LocalAccount, period: int, amount_g: int) -> Event:
        _, ev = await self.send(enterprise, self.allowances.functions.surrender(period, amount_g))
        return self._one(ev, "Surrendered")

    async def settle(self, gov: LocalAccount, enterprise: str, period: int) -> Event:
        _, ev = await self.send(gov, self.allowances.functions.settle(
            self.chain.w3.to_checksum_address(enterprise), period))
        return self._one(ev, "ComplianceSettled")

    # -- market ----------------------------------------------------------------------------------

    async def offer(self, seller: LocalAccount, period: int, amount_g: int, price_per_tonne: int,
                    buyer: str | None = None) -> int:
        b = self.chain.w3.to_checksum_address(buyer) if buyer else "0x" + "00" * 20
        _, ev = await self.send(seller, self.market.functions.offer(
            period, amount_g, price_per_tonne, b))
        return int(self._one(ev, "OfferMade")["offerId"])

    async def accept(self, buyer: LocalAccount, offer_id: int, amount_g: int) -> Event:
        _, ev = await self.send(buyer, self.market.functions.accept(offer_id, amount_g))
        return self._one(ev, "Traded")

    async def cancel(self, account: LocalAccount, offer_id: int) -> Event:
        _, ev = await self.send(account, self.market.functions.cancel(offer_id))
        return self._one(ev, "OfferCancelled")

    async def confirm_settlement(self, finance: LocalAccount, trade_id: int,
                                 payment_ref: bytes) -> Event:
        _, ev = await self.send(finance, self.market.functions.confirmSettlement(
            trade_id, payment_ref))
        return self._one(ev, "SettlementConfirmed")

    # -- verification ----------------------------------------------------------------------------

    async def file_report(self, auditor: LocalAccount, enterprise: str, period: int,
                          verified_g: int, report_hash: bytes, uri: str) -> int:
        _, ev = await self.send(auditor, self.verification.functions.fileReport(
            self.chain.w3.to_checksum_address(enterprise), period, verified_g, report_hash, uri))
        return int(self._one(ev, "ReportFiled")["reportId"])

    async def file_finding(self, auditor: LocalAccount, enterprise: str, period: int,
                           kind: FindingKind, corrected_g: int, evidence_hash: bytes,
                           evidence_uri: str = "", *, gateway_id: str | None = None,
                           batch_seq: int = 0, record_leaf: bytes = b"\x00" * 32,
                           proof: Sequence[bytes] = ()) -> int:
        gk = gateway_key(gateway_id) if gateway_id else b"\x00" * 32
        f = (self.chain.w3.to_checksum_address(enterprise), period, int(kind), corrected_g,
             evidence_hash, evidence_uri, gk, batch_seq, record_leaf, list(proof))
        _, ev = await self.send(auditor, self.verification.functions.fileFinding(f))
        return int(self._one(ev, "FindingFiled")["findingId"])

    async def confirm_finding(self, gov: LocalAccount, finding_id: int) -> list[Event]:
        _, ev = await self.send(gov, self.verification.functions.confirmFinding(finding_id))
        return ev

    async def reject_finding(self, gov: LocalAccount, finding_id: int, reason: str) -> Event:
        _, ev = await self.send(gov, self.verification.functions.rejectFinding(finding_id, reason))
        return self._one(ev, "FindingRejected")

    async def set_penalty_rate(self, gov: LocalAccount, kind: FindingKind, bps: int) -> Event:
        _, ev = await self.send(gov, self.verification.functions.setPenaltyRate(int(kind), bps))
        return self._one(ev, "PenaltyRateSet")

    # -- queries ---------------------------------------------------------------------------------

    async def periods(self) -> list[dict[str, Any]]:
        n = int(await self.call(self.registry.functions.periodCount()))
        out = []
        for i in range(1, n + 1):
            p = await self.call(self.registry.functions.period(i))
            out.append({"period": i, "start_ns": int(p[0]), "end_ns": int(p[1]),
                        "closed": bool(p[2])})
        return out

    async def enterprise(self, account: str) -> dict[str, Any]:
        e = await self.call(self.registry.functions.enterprise(
            self.chain.w3.to_checksum_address(account)))
        return {"account": str(e[0]), "status": EnterpriseStatus(int(e[1])).name.lower(),
                "certified_at": int(e[2]), "credit_code": str(e[3]), "name": str(e[4]),
                "industry": str(e[5]), "region": str(e[6])}

    async def gateways_of(self, account: str) -> list[dict[str, Any]]:
        keys = await self.call(self.registry.functions.gatewaysOf(
            self.chain.w3.to_checksum_address(account)))
        out = []
        for k in keys:
            g = await self.call(self.ledger.functions.gateway(bytes(k)))
            out.append({"gateway_id": str(g[0]), "gateway_key": "0x" + bytes(k).hex(),
                        "sender": str(g[1]), "active": bool(g[3]), "last_seq": int(g[4]),
                        "last_record_seq": int(g[5])})
        return out

    async def period_account(self, enterprise: str, period: int) -> dict[str, Any]:
        """Everything about one enterprise in one period (grams CO2e)."""
        addr = self.chain.w3.to_checksum_address(enterprise)
        a = await self.call(self.allowances.functions.accountOf(addr, period))
        em = await self.call(self.ledger.functions.emissionsOf(addr, period))
        out: dict[str, Any] = {
            "period": period,
            "reported_g": {"scope1": int(em[0]), "scope2": int(em[1]), "scope3": int(em[2]),
                           "total": int(em[0]) + int(em[1]) + int(em[2])},
            "batches": int(em[3]),
        }
        if ALLOWANCES in self.addresses:
            out.update({
                "allocated_g": int(a[0]),
                "balance_g": int(await self.call(self.allowances.functions.balanceOf(
                    period, addr))),
                "surrendered_g": int(a[1]), "verified_g": int(a[2]) if a[5] else None,
                "penalty_g": int(a[3]), "penalty_deducted_g": int(a[4]),
                "obligation_g": int(await self.call(self.allowances.functions.obligation(
                    addr, period))),
                "compliance": Compliance(int(await self.call(
                    self.allowances.functions.compliance(addr, period)))).name.lower(),
                "settled": (Compliance(int(a[7])).name.lower() if a[6] else None),
            })
        if VERIFICATION in self.addresses:
            out["latest_report"] = int(await self.call(
                self.verification.functions.latestReport(addr, period)))
            out["findings"] = [int(x) for x in await self.call(
                self.verification.functions.findingsOf(addr, period))]
        return out

    async def account_view(self, enterprise: str, periods: Sequence[int] | None = None
                           ) -> dict[str, Any]:
        """An enterprise's record, gateways and per-period accounts (all periods by default,
        plus period 0 when its gateways anchored outside any period)."""
        view = await self.enterprise(enterprise)
        view["gateways"] = await self.gateways_of(enterprise)
        if periods is None:
            periods = [p["period"] for p in await self.periods()]
            em0 = await self.call(self.ledger.functions.emissionsOf(
                self.chain.w3.to_checksum_address(enterprise), 0))
            if int(em0[3]):
                periods = [0, *periods]
        view["periods"] = [await self.period_account(enterprise, p) for p in periods]
        return view


def dev_enterprise_account(regulator: LocalAccount) -> LocalAccount:
    """A development enterprise key derived from the regulator's key (see `register_gateway`)."""
    from eth_account import Account

    acct: LocalAccount = Account.from_key(keccak256(b"mrv-dev-enterprise/" + bytes(regulator.key)))
    return acct


async def register_gateway(chain: EvmChain, account: LocalAccount, gateway_id: str,
                           sender: str, signing_key: bytes) -> bytes:
    """Register a gateway on the ledger ``chain`` points at, signed by ``account``.

    ``account`` is normally the owning enterprise. Single-key development shortcut (tests,
    demos): when ``account`` is the registry's regulator and not an enterprise, it takes the
    government role, certifies a development enterprise whose key is derived from its own
    (`dev_enterprise_account`), funds it and registers the gateway as that enterprise.
    `mrvctl` never does this: there every role signs with its own key."""
    mrv = await Mrv.attach(chain)
    status = int(await mrv.call(mrv.registry.functions.enterpriseStatus(account.address)))
    if status != EnterpriseStatus.NONE or not await mrv.has_role("regulator", account.address):
        return await mrv.register_gateway(account, gateway_id, sender, signing_key)
    dev = dev_enterprise_account(account)
    if not await mrv.has_role("government", account.address):
        await mrv.grant(account, "government", account.address)
    if int(await mrv.call(mrv.registry.functions.enterpriseStatus(dev.address))) == 0:
        await mrv.certify(account, dev.address, credit_code=make_uscc(bytes.fromhex(
            dev.address[2:])), name="development enterprise", industry="DEV", region="000000")
    if int(await chain._rpc(chain.w3.eth.get_balance(dev.address))) < 10**18:
        await fund(chain, account, dev.address, 10**20)
    await mrv.reserve_gateway_id(account, gateway_id, dev.address)
    return await mrv.register_gateway(dev, gateway_id, sender, signing_key)


async def fund(chain: EvmChain, funder: LocalAccount, to: str, wei: int) -> None:
    """Send ``wei`` to ``to`` (FISCO BCOS with feature_balance and most chains need a balance)."""
    raw, txh, _ = await chain.sign_call(funder, None, to=chain.w3.to_checksum_address(to),
                                        data="0x", value=wei)
    await chain.send_raw(raw)
    r = await chain.wait_receipt(txh, 60)
    if r.status != 1:
        raise ChainRevert("TransferFailed", (to, wei))
