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
