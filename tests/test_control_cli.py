"""``mrv-command``: create a key, sign, approve, send and wait for the ack, as a governance
body would, against a running control service and a real broker."""

from __future__ import annotations

import asyncio
import json
import stat
import sys
from pathlib import Path

from simulator import Mosquitto
from tests.test_control_support import AUDITOR, GATEWAY_SEED, GW, harness, pk

BIN = Path(sys.executable).parent / "mrv-command"


async def _run(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    p = await asyncio.create_subprocess_exec(
        str(BIN), *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(stdin), 60)
    assert p.returncode is not None
    return p.returncode, out.decode(), err.decode()


async def test_keygen_sign_approve_send(tmp_path: Path, mosquitto: Mosquitto) -> None:
    key = tmp_path / "keys" / "mee.key"
    rc, out, err = await _run("keygen", str(key))
    assert rc == 0, err
    pub = json.loads(out)["public_key"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    rc, out, _ = await _run("pubkey", str(key))
    assert out.strip() == pub
    rc, _, err = await _run("keygen", str(key))
    assert rc == 2 and "refusing to overwrite" in err
    aud_key = tmp_path / "auditor.key"
    aud_key.write_text(AUDITOR.hex() + "\n")
    extra = {"issuers": [{"key_id": "mee", "public_key": pub, "points": ["vent.opening",
                                                                         "burner.air_damper"]},
                         {"key_id": "auditor", "public_key": pk(AUDITOR), "points": ["*"]}]}
    async with harness(tmp_path / "gw", mosquitto.port, extra=extra) as h:
        broker = f"127.0.0.1:{mosquitto.port}"
        gw_pub = pk(GATEWAY_SEED)
        cmd = tmp_path / "cmd.json"
        rc, _, err = await _run("sign", "--key", str(key), "--issuer", "mee", "--gateway", GW,
                                "--point", "vent.opening", "--value", "35", "--unit", "%",
                                "-o", str(cmd))
        assert rc == 0, err
        envelope = json.loads(cmd.read_text())
        assert envelope["value"] == "35" and envelope["issuer"] == "mee"
        rc, out, err = await _run("send", str(cmd), "--broker", broker, "--gateway-key", gw_pub)
        assert rc == 0, (out, err)
        ack = json.loads(out)
        assert ack["status"] == "applied" and ack["id"] == envelope["id"]
        assert "applied in" in err
        assert h.model.vent == 35.0
        # sending it again: replayed, exit 1
        rc, out, err = await _run("send", str(cmd), "--broker", broker)
        assert rc == 1 and json.loads(out)["reason"] == "replayed"
        # two-person point: sign, approve (from stdin), send
        rc, signed, err = await _run("sign", "--key", str(key), "--issuer", "mee",
                                     "--gateway", GW, "--point", "burner.air_damper",
                                     "--value", "4.75e1", "--unit", "%")
        assert rc == 0, err
        assert json.loads(signed)["value"] == "47.5"
        rc, out, err = await _run("send", "-", "--broker", broker, stdin=signed.encode())
        assert rc == 1 and json.loads(out)["reason"] == "approval-required"
        rc, signed2, err = await _run("sign", "--key", str(key), "--issuer", "mee",
                                      "--gateway", GW, "--point", "burner.air_damper",
                                      "--value", "47.5", "--unit", "%")
        rc, approved, err = await _run("approve", "-", "--key", str(aud_key),
                                       "--key-id", "auditor", stdin=signed2.encode())
        assert rc == 0, err
        assert json.loads(approved)["approvals"][0]["key_id"] == "auditor"
        rc, out, err = await _run("send", "-", "--broker", broker, "--gateway-key", gw_pub,
                                  stdin=approved.encode())
        assert rc == 0, (out, err)
        assert h.model.damper == 47.5
        # a wrong gateway key: the ack does not verify
        rc, signed3, _ = await _run("sign", "--key", str(key), "--issuer", "mee",
                                    "--gateway", GW, "--point", "vent.opening", "--value", "36",
                                    "--unit", "%")
        rc, out, err = await _run("send", "-", "--broker", broker, "--gateway-key", pk(AUDITOR),
                                  stdin=signed3.encode())
        assert rc == 1 and "does not verify" in err


async def test_bad_input_and_no_ack(tmp_path: Path, mosquitto: Mosquitto) -> None:
    key = tmp_path / "k.key"
    key.write_text("zz\n")
    rc, _, err = await _run("sign", "--key", str(key), "--issuer", "x", "--gateway", GW,
                            "--point", "p", "--value", "1", "--unit", "%")
    assert rc == 2 and "not hex" in err
    key.write_text((b"\x01" * 32).hex())
    rc, _, err = await _run("sign", "--key", str(key), "--issuer", "x", "--gateway", GW,
                            "--point", "p", "--value", "lots", "--unit", "%")
    assert rc == 2 and "not a number" in err
    rc, _, err = await _run("sign", "--key", str(key), "--issuer", "x", "--gateway", GW,
                            "--point", "p", "--value", "1", "--unit", "k W")
    assert rc == 2 and "unit" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    rc, _, err = await _run("send", str(bad), "--broker", f"127.0.0.1:{mosquitto.port}")
    assert rc == 2 and "missing field" in err
    rc, signed, _ = await _run("sign", "--key", str(key), "--issuer", "x", "--gateway", GW,
                               "--point", "p", "--value", "1", "--unit", "%")
    # nobody listens on the command topic: no ack in time
    rc, _, err = await _run("send", "-", "--broker", f"127.0.0.1:{mosquitto.port}",
                            "--timeout", "1", stdin=signed.encode())
    assert rc == 3 and "no ack" in err
    from simulator import free_port

    rc, _, err = await _run("send", "-", "--broker", f"127.0.0.1:{free_port()}",
                            stdin=signed.encode())
    assert rc == 3 and "broker" in err


async def _finish(p: asyncio.subprocess.Process, timeout_s: float) -> tuple[bytes, bytes]:
    """``p.communicate()`` within ``timeout_s``; a process still running then is killed (so it
    leaks into no later test) and the failure shows what it had written."""
    try:
        return await asyncio.wait_for(p.communicate(), timeout_s)
    except TimeoutError:
        p.kill()
        out, err = await p.communicate()
        raise AssertionError(f"mrv-command still running after {timeout_s} s; stdout "
                             f"{out.decode()[-1500:]!r}; stderr {err.decode()[-1500:]!r}") from None


async def _watch(mosquitto: Mosquitto, publish: list[bytes], *args: str) -> tuple[int, str, str]:
    """Run ``mrv-command watch``, publish ``publish`` on the gateway's telemetry topic once it
    has subscribed, and return its exit code, stdout and stderr."""
    import aiomqtt

    p = await asyncio.create_subprocess_exec(
        str(BIN), "watch", "--broker", f"127.0.0.1:{mosquitto.port}", "--gateway", GW, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert p.stderr is not None and p.stdout is not None
    first = await asyncio.wait_for(p.stderr.readline(), 30)
    assert first.decode().startswith(f"watching mrv/{GW}/telemetry"), first
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
        for m in publish:
            await c.publish(f"mrv/{GW}/telemetry", m, qos=0)
    out, err = await _finish(p, 60)
    assert p.returncode is not None
    return p.returncode, out.decode(), first.decode() + err.decode()


async def test_watch_checks_every_live_reading(mosquitto: Mosquitto) -> None:
    from control import telemetry_json
    from gateway import Reading
    from ledger_client._format import record_leaf, record_signing_bytes
    from ledger_client._signing import Signer
    from mrv_core._records import committed_reading

    signer = Signer(GATEWAY_SEED)
    gw_pub = pk(GATEWAY_SEED)

    def readings(gw: str, first_seq: int, n: int) -> list[Reading]:
        return [committed_reading(Reading(point_id=f"stack.p{i}", ts_ns=1_700_000_000_000 + i,
                                          value=10.0 + i, unit="mg/m3", source="hj212"),
                                  first_seq + i, gw) for i in range(n)]

    def message(gw: str, rs: list[Reading]) -> bytes:
        return telemetry_json(gw, rs, [signer.sign(record_signing_bytes(record_leaf(r)))
                                       for r in rs])

    genuine = message(GW, readings(GW, 1, 3))
    doc = json.loads(message(GW, readings(GW, 4, 2)))
    doc["readings"][0]["value"] = 99.0  # changed on the way: seq 4 must not verify
    tampered = json.dumps(doc).encode()
    # a genuine message of another gateway replayed on this one's topic: seq 6 not verified
    elsewhere = message("other-gw", readings("other-gw", 6, 1))
    rc, out, err = await _watch(mosquitto, [genuine, b"not json", tampered, elsewhere],
                                "--gateway-key", gw_pub, "--count", "6", "--timeout", "30")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["seq"], r["verified"]) for r in rows] == [
        (1, True), (2, True), (3, True), (4, False), (5, True), (6, False)]
    assert rows[0] == {"seq": 1, "point": "stack.p0", "ts_ns": 1_700_000_000_000,
                       "value": 10.0, "unit": "mg/m3", "quality": 0, "verified": True}
    assert rc == 1, err
    assert "rejected a message" in err
    assert "6 readings: 4 verified, 2 NOT verified; 1 malformed messages" in err

    # all genuine: exit 0 once --count readings are in
    rc, out, err = await _watch(mosquitto, [message(GW, readings(GW, 10, 4))],
                                "--gateway-key", gw_pub, "--count", "4", "--timeout", "30")
    assert rc == 0, err
    assert [json.loads(line)["verified"] for line in out.splitlines()] == [True] * 4
    # the wrong key: nothing verifies
    rc, out, err = await _watch(mosquitto, [genuine], "--gateway-key", pk(AUDITOR),
                                "--count", "3", "--timeout", "30")
    assert rc == 1 and "0 verified, 3 NOT verified" in err
    # nothing arrives in time: exit 3
    rc, out, err = await _watch(mosquitto, [], "--gateway-key", gw_pub, "--count", "1",
                                "--timeout", "1")
    assert rc == 3 and "0 of 1 readings within 1.0 s" in err
    # interrupted (Ctrl-C) after the first message: the summary still comes, exit 130
    import signal

    import aiomqtt

    # Ctrl-C as at a terminal: SIGINT at its default disposition in the child, whatever this
    # process inherited (a shell's background job, e.g. `nohup ... &`, ignores SIGINT, and an
    # ignored signal stays ignored across exec: `watch` then never saw the Ctrl-C)
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, "
        "signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])",
        str(BIN), "watch", "--broker", f"127.0.0.1:{mosquitto.port}", "--gateway", GW,
        "--gateway-key", gw_pub, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert p.stderr is not None and p.stdout is not None
    assert (await asyncio.wait_for(p.stderr.readline(), 30)).startswith(b"watching")
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
        await c.publish(f"mrv/{GW}/telemetry", genuine, qos=0)
    for _ in range(3):
        assert json.loads(await asyncio.wait_for(p.stdout.readline(), 30))["verified"] is True
    p.send_signal(signal.SIGINT)
    _, err_b = await _finish(p, 30)
    assert p.returncode == 130
    assert "3 readings: 3 verified, 0 NOT verified; 0 malformed messages" in err_b.decode()
    # a key that is not a key: exit 2
    rc, _, err = await _run("watch", "--broker", f"127.0.0.1:{mosquitto.port}", "--gateway", GW,
                            "--gateway-key", "0x1234")
    assert rc == 2 and "32-byte" in err
