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
from ledger_client import Bundle
from ledger_client._verify import BundleError
from mrv_core._metrics import Metrics
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
    assert checks == {"chain": True, "shown-values": True, "record-in-batch": True,
                      "header-anchored": True, "signature": True, "on-chain-proof": True}


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
    assert checks == {"chain": True, "shown-values": True, "record-in-batch": True,
                      "header-anchored": True, "signature": False, "on-chain-proof": True}


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
    d["record"]["value"] = 100.0  # shown as proven: only the proof can fail
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


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway._cli", *args], capture_output=True,
                          text=True, check=False)


async def test_a_bundle_must_show_what_it_proves_and_a_deleted_record_fails(
        anchored: Provisioned, tmp_path: Path) -> None:
    """Issue 11, item 9: a `value` contradicting `value_bits`, a `chain_id` that is not the
    node's, a `header_hash` that is not the batch's: each fails its check (exit 1).
    Item 17: a committed record that was deleted is exit 1 (check failed), not 2; a seq the
    outbox never committed stays bad input (exit 2). (One test: one provisioned ledger.)"""
    out = tmp_path / "b.json"
    good = (await proof_bundle(anchored, 4)).to_json()
    proven = good["record"]["value"]
    assert isinstance(proven, float)

    def run(d: dict[str, object]) -> tuple[int, dict[str, bool]]:
        out.write_text(json.dumps(d))
        p = _cli("verify", "--bundle", str(out), "--rpc", anchored.rpc_url, "--json")
        assert p.returncode in (0, 1), p.stderr
        return p.returncode, {c["check"]: c["ok"] for c in json.loads(p.stdout)["checks"]}

    code, checks = run(good)
    assert code == 0 and all(checks.values())
    for change, failing in (
            (lambda d: d["record"].update(value=proven + 100.0), "shown-values"),
            (lambda d: d["record"].update(value=None), "shown-values"),
            (lambda d: d["chain"].update(chain_id=d["chain"]["chain_id"] + 1), "chain"),
            (lambda d: d["batch"].update(header_hash="0x" + "11" * 32), "shown-values")):
        d = json.loads(json.dumps(good))
        change(d)
        code, checks = run(d)
        assert code == 1, (change, checks)
        assert [k for k, ok in checks.items() if not ok] == [failing]

    import sqlite3

    cfg = load_config(anchored.config)
    db = sqlite3.connect(cfg.outbox_path())
    db.execute("DELETE FROM records WHERE seq = 3")
    db.commit()
    db.close()
    gone = _cli("verify", str(anchored.config), "--seq", "3")
    assert gone.returncode == 1, gone.stderr
    assert "record 3 was committed" in gone.stderr and "deleted" in gone.stderr
    never = _cli("verify", str(anchored.config), "--seq", "999999")
    assert never.returncode == 2 and "record 999999 is not in the outbox" in never.stderr




def test_bundle_files_are_limited_before_parsing(tmp_path: Path) -> None:
    from ledger_client._verify import MAX_BUNDLE_BYTES, parse_bundle

    for data, fragment in ((b" " * (MAX_BUNDLE_BYTES + 1), "larger than"),
                           (b"[" * 100_000, "nested deeper"),
                           (b'{"a": "[[[[[[[[[[[[[[[[[[[["}', "format"),  # brackets in a string
                           (b"\xff", "not UTF-8"),
                           (b'{"format": NaN}', "not JSON"),
                           (b"9" * 5000, "not JSON")):
        with pytest.raises(BundleError, match=fragment):
            parse_bundle(data)
    big = tmp_path / "big.json"
    big.write_bytes(b"[" * (MAX_BUNDLE_BYTES + 10))
    p = _cli("verify", "--bundle", str(big), "--rpc", "http://127.0.0.1:1")
    assert p.returncode == 2 and "larger than" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize(("path", "value", "fragment"), [
    (("record", "seq"), True, "expected an integer"),
    (("record", "seq"), "5", "expected an integer"),
    (("record", "seq"), 0, "out of range"),
    (("record", "ts_ns"), 2**63, "out of range"),
    (("record", "quality"), 2**32, "out of range"),
    (("record", "point_id"), 7, "expected a string"),
    (("record", "value"), "1.0", "expected a number"),
    (("record", "value"), 10**400, "out of the range"),
    (("batch", "count"), -1, "out of range"),
    (("batch", "co2e_g"), [1, 2], "3 integers"),
    (("chain", "chain_id"), 1.5, "expected an integer"),
    (("proof",), ["0x" + "00" * 32] * 65, "at most 64"),
])
def test_bundle_fields_have_types_and_ranges(path: tuple[str, ...], value: object,
                                             fragment: str) -> None:
    from tests.fuzz.targets_ledger import TARGETS

    (target,) = TARGETS  # its seeds are genuine bundles, built offline
    d = json.loads(target.seeds[0])
    Bundle.from_json(json.loads(json.dumps(d)))  # as made: accepted
    target = d
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    with pytest.raises(BundleError, match=fragment):
        Bundle.from_json(json.loads(json.dumps(d)))
