"""Helpers of the ingest and delivery tests: batches built and signed as a gateway builds them,
the portal's ``gateways`` and ``batches`` rows (what its indexer writes) inserted directly or
filled from the chain, and a portal served by uvicorn over HTTPS on a loopback socket."""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
import uvicorn

from ledger_client import (
    ZERO32,
    BatchHeader,
    Signer,
    build_header,
    gateway_key,
    read_address_book,
    record_leaf,
    record_signing_bytes,
    submission_bytes,
)
from mrv_core import AuditRecord, DerivedRecord, Reading, Record
from portal import Indexer, PortalContext, create_app, migrate, open_engine
from portal._chain_tables import batches, gateways
from portal._config import ApiSection, ChainSection, PortalConfig
from simulator import Provisioned, SimPki

ENTERPRISE = "0x" + "ab" * 20


def signer(n: int = 1) -> Signer:
    return Signer(bytes([n]) * 32)


def records(gw: str, first: int, n: int, *, t0: int = 1_700_000_000_000_000_000,
            mixed: bool = True) -> list[Record]:
    """``n`` committed records from seq ``first``: readings, and with ``mixed`` a derived and
    an audit record among them (every kind, with NaN, negative and negative-zero values)."""
    out: list[Record] = []
    values = [1.5, -2.25, math.nan, -0.0, 1e300, 42.0]
    for i in range(n):
        seq = first + i
        ts = t0 + seq * 1_000_000_000
        if mixed and i % 7 == 3:
            out.append(DerivedRecord(point_id="stack.co2", derivation="hour-mean",
                                     period_start_ns=ts - 3_600_000_000_000, period_end_ns=ts,
                                     value=values[i % len(values)], unit="t/h", quality=4,
                                     from_seq=max(1, seq - 3), to_seq=seq - 1, seq=seq,
                                     gateway_id=gw))
        elif mixed and i % 7 == 5:
            out.append(AuditRecord(ts_ns=ts, category="command", subject=f"cmd-{seq}",
                                   payload='{"verdict":"accepted","ü":"✓"}', seq=seq,
                                   gateway_id=gw))
        else:
            out.append(Reading(point_id=f"feeder.p{i % 3}", ts_ns=ts,
                               value=values[i % len(values)], unit="kW",
                               source="modbus_tcp:feeder", quality=i % 2, seq=seq,
                               gateway_id=gw))
    return out


def _ts(r: Record) -> int:
    return r.period_start_ns if isinstance(r, DerivedRecord) else r.ts_ns


@dataclass(frozen=True)
class Built:
    header: BatchHeader
    signature: bytes
    records: list[tuple[Record, bytes | None]]

    def body(self) -> bytes:
        return submission_bytes(self.header, self.signature, self.records)


def build(gw: str, seq: int, recs: list[Record], key: Signer, *, prev: bytes = ZERO32,
          sign_records: bool = False, co2e: tuple[int, int, int] = (0, 0, 0)) -> Built:
    """A batch of ``recs`` as a gateway builds and signs it."""
    h = build_header(gateway_id=gw, seq=seq, prev_hash=prev,
                     records=[(r.seq, _ts(r), record_leaf(r)) for r in recs], co2e_g=co2e)
    sigs = [key.sign(record_signing_bytes(record_leaf(r))) if sign_records else None
            for r in recs]
    return Built(h, key.sign(h.hash()), list(zip(recs, sigs, strict=True)))


def portal_config(**api: object) -> PortalConfig:
    return PortalConfig(chain=ChainSection(address_book=Path("unused.json"), poll_s=0.05),
                        api=ApiSection(**api))  # type: ignore[arg-type]


@contextlib.contextmanager
def portal_context(db_url: str, **api: object) -> Iterator[PortalContext]:
    engine = open_engine(db_url)
    migrate(engine)
    try:
        yield PortalContext(config=portal_config(**api), engine=engine)
    finally:
        engine.dispose()


def register(engine: sa.Engine, gw: str, key: Signer | bytes, *, active: bool = True,
             enterprise: str = ENTERPRISE) -> None:
    """The ``gateways`` row the indexer writes for a registered gateway (upsert)."""
    pub = key if isinstance(key, bytes) else key.public_key
    gk = "0x" + gateway_key(gw).hex()
    with engine.begin() as c:
        c.execute(gateways.delete().where(gateways.c.gateway_key == gk))
        c.execute(gateways.insert().values(
            gateway_key=gk, gateway_id=gw, enterprise=enterprise.lower(), active=active,
            registered_at=1, sender="0x" + "00" * 20, signing_key="0x" + pub.hex(),
            reserved_for=None))


def anchor(engine: sa.Engine, header: BatchHeader, signature: bytes, *,
           header_hash: bytes | None = None, block: int = 1) -> None:
    """The ``batches`` row the indexer writes from a ``BatchAnchored`` event."""
    h = header
    with engine.begin() as c:
        c.execute(batches.insert().values(
            gateway_key="0x" + gateway_key(h.gateway_id).hex(), seq=h.seq,
            gateway_id=h.gateway_id, enterprise=ENTERPRISE,
            header_hash="0x" + (header_hash or h.hash()).hex(), root="0x" + h.root.hex(),
            count=h.count, first_record_seq=h.first_record_seq,
            last_record_seq=h.last_record_seq, first_ts_ns=h.first_ts_ns,
            last_ts_ns=h.last_ts_ns, co2e_scope1_g=h.co2e_scope1_g,
            co2e_scope2_g=h.co2e_scope2_g, co2e_scope3_g=h.co2e_scope3_g,
            prev_hash="0x" + h.prev_hash.hex(), signature="0x" + signature.hex(), period=1,
            block_number=block, tx_hash="0x" + "00" * 32))


def index_chain(engine: sa.Engine, p: Provisioned) -> int:
    """The portal's own indexer, run over gateway ``p``'s deployment into ``engine`` until it
    has caught up (confirmations 0): what `mrv-portal run` would hold. Returns the blocks
    applied by this call."""
    book = read_address_book(p.address_book)
    cfg = PortalConfig.model_validate({"chain": {
        "rpc_url": p.rpc_url, "address_book": p.address_book, "confirmations": 0,
        "step_blocks": 5_000}})
    ctx = PortalContext(config=cfg, engine=engine,
                        contracts={str(k): str(v).lower() for k, v in book["contracts"].items()},
                        chain_id=int(book.get("chain_id", 0)))
    ix = Indexer(ctx)
    total = 0
    try:
        while (n := ix.step()) > 0:
            total += n
    finally:
        ix.close()
    return total


class ServedPortal:
    """The portal app served by uvicorn over HTTPS on a loopback socket of its own (bound
    first, so the port is known while nothing listens: the portal is "down" until `start`)."""

    def __init__(self, ctx: PortalContext, pki: SimPki) -> None:
        self.ctx = ctx
        self.pki = pki
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"https://127.0.0.1:{self.port}"
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> ServedPortal:
        from portal._ingest_store import ingest_verifier

        cfg = uvicorn.Config(create_app(self.ctx, workers=[ingest_verifier]),
                             ssl_certfile=str(self.pki.server_cert),
                             ssl_keyfile=str(self.pki.server_key), log_level="warning",
                             lifespan="on")
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError("the portal did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(30)
        self.sock.close()
