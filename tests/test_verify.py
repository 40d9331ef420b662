"""An auditor's verification: genuine readings hold; tampering of any kind is caught."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from config import load_config
from gateway._daemon import run_daemon
from gateway._metrics import Metrics
from ledger_client import Bundle
from ledger_client._verify import BundleError
from simulator import Provisioned
from tests.support import proof_bundle, verify_checks


@pytest.fixture
async def anchored(gateway: Provisioned) -> Provisioned:
    """A gateway that ran for a few polls and anchored everything."""
    import asyncio

    cfg = load_config(gateway.config)
    stop = asyncio.Event()
    metrics = Metrics()
    task = asyncio.create_task(run_daemon(cfg, stop=stop, metrics=metrics))
    while metrics.counters["polls"] < 10 and not task.done():
        await asyncio.sleep(0.05)
    stop.set()
    await task
    return gateway


async def test_genuine_reading_holds(anchored: Provisioned) -> None:
    checks = await verify_checks(anchored, await proof_bundle(anchored, 5))
    assert checks == {"record-in-batch": True, "header-anchored": True, "signature": True,
                      "on-chain-proof": True}


async def test_tampered_reading_fails(anchored: Provisioned) -> None:
    b = await proof_bundle(anchored, 5)
    for change in ({"value": b.record.value + 0.01}, {"quality": 0xFFFF},
                   {"ts_ns": b.record.ts_ns + 1}, {"point_id": "other"}):
        forged = dataclasses.replace(b, record=dataclasses.replace(b.record, **change))
        checks = await verify_checks(anchored, forged)
        assert checks["record-in-batch"] is False, change
        assert checks["on-chain-proof"] is False, change
        assert checks["header-anchored"] is True  # the batch itself is untouched


async def test_tampered_root_fails(anchored: Provisioned) -> None:
    b = await proof_bundle(anchored, 5)
    root = bytes([b.header.root[0] ^ 1]) + b.header.root[1:]
    checks = await verify_checks(anchored, dataclasses.replace(
        b, header=dataclasses.replace(b.header, root=root)))
    assert checks["header-anchored"] is False
    assert checks["record-in-batch"] is False


async def test_wrong_signature_fails(anchored: Provisioned) -> None:
    b = await proof_bundle(anchored, 5)
    sig = bytes([b.signature[0] ^ 0x80]) + b.signature[1:]
    checks = await verify_checks(anchored, dataclasses.replace(b, signature=sig))
    assert checks == {"record-in-batch": True, "header-anchored": True, "signature": False,
                      "on-chain-proof": True}


async def test_bundle_round_trips_through_json(anchored: Provisioned) -> None:
    b = await proof_bundle(anchored, 7)
    again = Bundle.from_json(json.loads(json.dumps(b.to_json())))
    assert again == b


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("proof"),
    lambda d: d["batch"].update(root="0x12"),
    lambda d: d.update(format="other/v9"),
    lambda d: d["record"].update(value_bits="zz"),
])
async def test_malformed_bundle_is_rejected_clearly(anchored: Provisioned, mutate: object) -> None:
    d = (await proof_bundle(anchored, 3)).to_json()
    mutate(d)  # type: ignore[operator]
    with pytest.raises(BundleError):
        Bundle.from_json(d)


async def test_verify_cli_exit_codes(anchored: Provisioned, tmp_path: Path) -> None:
    exe = [sys.executable, "-m", "gateway._cli"]
    ok = subprocess.run([*exe, "verify", str(anchored.config), "--seq", "4"],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verdict: the reading HOLDS" in ok.stdout
    out = tmp_path / "b.json"
    subprocess.run([*exe, "export-proof", str(anchored.config), "--seq", "4", "-o", str(out)],
                   check=True)
    d = json.loads(out.read_text())
    d["record"]["value_bits"] = "0x4059000000000000"
    out.write_text(json.dumps(d))
    ko = subprocess.run([*exe, "verify", "--bundle", str(out), "--rpc", anchored.rpc_url,
                         "--json"], capture_output=True, text=True, check=False)
    assert ko.returncode == 1, ko.stderr
    rep = json.loads(ko.stdout)
    assert rep["ok"] is False
    assert [c["check"] for c in rep["checks"] if not c["ok"]] == ["record-in-batch",
                                                                  "on-chain-proof"]
    pending = subprocess.run([*exe, "verify", str(anchored.config), "--seq", "999999"],
                             capture_output=True, text=True, check=False)
    assert pending.returncode == 2
    assert "record 999999 is not in the outbox" in pending.stderr
