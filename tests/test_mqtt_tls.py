"""MQTT over TLS, against a real Mosquitto with a TLS listener that requires a client
certificate: the sensor driver, the control service and ``mrv-command``; a broker that does
not verify, or a client without a certificate, is refused and the source goes on retrying;
config mistakes are named by YAML path."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from config import ConfigError, parse_config
from control._config import ControlConfig
from control._service import ControlService
from drivers.mqtt._source import MqttSource
from ledger_client import Outbox
from mrv_core._metrics import Metrics
from mrv_core._tls import TlsConfig, client_context
from simulator import ActuatorModel, ActuatorPlant, Mosquitto, SimPki

from .support import Collector, until
from .test_control_support import EPB, GATEWAY_SEED, GW, control_dict, pk
from .test_drivers_mqtt import mqtt_device

BIN = Path(sys.executable).parent / "mrv-command"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SimPki:
    return SimPki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_broker(pki: SimPki) -> Iterator[Mosquitto]:
    with Mosquitto(tls=pki, require_client_cert=True) as m:
        yield m


def _tls(pki: SimPki) -> dict[str, Any]:
    return {"ca_file": pki.ca_file, "cert_file": pki.client_cert, "key_file": pki.client_key}


async def _run_source(src: MqttSource) -> asyncio.Task[None]:
    return asyncio.create_task(src.run())


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def test_mqtt_sensors_over_mutual_tls(tls_broker: Mosquitto, pki: SimPki) -> None:
    sink, m = Collector(), Metrics()
    src = MqttSource(mqtt_device(tls_broker.port, tls=_tls(pki)), sink, m)
    task = await _run_source(src)
    try:
        await until(lambda: m.component("device:stack-sensors").state == "ok")
        ctx = client_context(TlsConfig.model_validate(_tls(pki)))
        async with aiomqtt.Client("127.0.0.1", tls_broker.port, tls_context=ctx) as c:
            for i in range(5):
                await c.publish("plant/boiler/temp", json.dumps({"data": {"t": 180.0 + i}}),
                                qos=1)
        await until(lambda: len(sink.of("boiler.t")) == 5)
    finally:
        await _stop(task)
    assert [r.value for r in sink.of("boiler.t")] == [180.0, 181.0, 182.0, 183.0, 184.0]


@pytest.mark.parametrize("case", ["plaintext", "unknown-ca", "no-client-cert"])
async def test_refused_connections_are_reported_and_retried(
        tls_broker: Mosquitto, pki: SimPki, tmp_path: Path, case: str) -> None:
    """The broker's certificate from a CA we do not trust, no TLS at all, or no client
    certificate: never connected, the device reported failing (with the reason), the source
    retries and stops cleanly."""
    if case == "plaintext":
        tls: dict[str, Any] | None = None
    elif case == "unknown-ca":
        other = SimPki.create(tmp_path / "other")
        tls = {**_tls(pki), "ca_file": other.ca_file}
    else:
        tls = {"ca_file": pki.ca_file}
    sink, m = Collector(), Metrics()
    src = MqttSource(mqtt_device(tls_broker.port, tls=tls), sink, m)
    task = await _run_source(src)
    try:
        await until(lambda: m.counters["mqtt_disconnects"] >= 1 or src.connects > 0, 30)
        # a moment for a crash after the refusal to show (a second refusal would take another
        # connect timeout, ~10 s, so the test does not wait for one)
        await asyncio.sleep(0.3)
        assert not task.done()  # still trying, not crashed
    finally:
        await _stop(task)
    assert src.connects == 0 and not sink.readings
    state = m.component("device:stack-sensors")
    assert state.state == "failing", state
    if case == "unknown-ca":
        assert "certificate verify failed" in state.detail, state.detail


def test_config_resolves_reads_and_names_mistakes(tmp_path: Path, pki: SimPki) -> None:
    head = ("gateway: {id: gw1, signing_key: keys/ed25519.key}\n"
            "chain: {rpc_url: \"http://127.0.0.1:8545\", chain_id: 31337, "
            "account_key: keys/evm.key,\n"
            "        contract: \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"}\n"
            "devices:\n"
            "  - driver: mqtt\n"
            "    name: sensors\n"
            "    host: broker.plant\n"
            "    port: 8883\n"
            "    client_id: gw1-sensors\n")
    tail = ("    points:\n"
            "      - {id: boiler.t, topic: plant/boiler/temp, value: data.t, unit: degC}\n")
    (tmp_path / "tls").mkdir()
    for src, name in ((pki.ca_file, "ca.pem"), (pki.client_cert, "gw.pem"),
                      (pki.client_key, "gw.key")):
        (tmp_path / "tls" / name).write_bytes(src.read_bytes())
    good = "    tls: {ca_file: tls/ca.pem, cert_file: tls/gw.pem, key_file: tls/gw.key}\n"
    cfg = parse_config(head + good + tail, base_dir=tmp_path)
    tls = cfg.devices[0].tls  # type: ignore[union-attr]
    assert tls is not None and tls.ca_file == tmp_path / "tls" / "ca.pem"
    assert tls.key_file == tmp_path / "tls" / "gw.key"
    # text alone (no base folder): paths as written, files not read
    assert parse_config(head + good.replace("ca.pem", "none.pem") + tail
                        ).devices[0].tls.ca_file == Path("tls/none.pem")  # type: ignore[union-attr]

    (tmp_path / "tls" / "junk.pem").write_text("not a certificate\n")
    for line, fragment in (
        ("    tls: {ca_file: tls/missing.pem}\n", "ca_file: cannot read"),
        ("    tls: {cert_file: tls/gw.pem}\n", "cert_file and key_file come together"),
        ("    tls: {ca_file: tls/junk.pem}\n", "not a usable certificate or key"),
        ("    tls: {ca_file: tls/ca.pem, insecure: true}\n", "insecure"),
    ):
        with pytest.raises(ConfigError) as e:
            parse_config(head + line + tail, base_dir=tmp_path)
        (issue,) = e.value.issues
        assert issue.path.startswith("devices[0].tls"), issue
        assert issue.line == 10, issue
        assert fragment in issue.message or fragment in issue.path, issue


async def test_control_commands_over_mutual_tls(tls_broker: Mosquitto, pki: SimPki,
                                                tmp_path: Path) -> None:
    """The control service subscribes over TLS; a governance body sends a command with
    ``mrv-command send --tls-ca/--tls-cert/--tls-key`` and gets the signed ack; without TLS
    it cannot reach the broker."""
    model = ActuatorModel()
    plant = await ActuatorPlant(model).start()
    cfg = ControlConfig.model_validate(control_dict(
        plant.port, tls_broker.port, broker={"tls": {k: str(v) for k, v in _tls(pki).items()}}))
    outbox = await Outbox.open(tmp_path / "outbox.sqlite", GW)
    metrics = Metrics()
    from control._envelope import sign_bytes

    service = ControlService(gateway_id=GW, config=cfg, data_dir=tmp_path, outbox=outbox,
                             metrics=metrics, sign=lambda m: sign_bytes(GATEWAY_SEED, m))
    run = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.ready.wait(), 15)
        key = tmp_path / "epb.key"
        key.write_text(EPB.hex() + "\n")
        sign = await asyncio.create_subprocess_exec(
            str(BIN), "sign", "--key", str(key), "--issuer", "epb", "--gateway", GW,
            "--point", "vent.opening", "--value", "42", "--unit", "%",
            stdout=asyncio.subprocess.PIPE)
        signed, _ = await sign.communicate()
        assert sign.returncode == 0

        async def send(*tls_args: str) -> tuple[int, str, str]:
            p = await asyncio.create_subprocess_exec(
                str(BIN), "send", "-", "--broker", f"127.0.0.1:{tls_broker.port}",
                "--gateway-key", pk(GATEWAY_SEED), "--timeout", "10", *tls_args,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(p.communicate(signed), 60)
            assert p.returncode is not None
            return p.returncode, out.decode(), err.decode()

        rc, _, err = await send()  # plaintext to a TLS listener
        assert rc == 3 and "broker" in err
        rc, _, err = await send("--tls-ca", str(tmp_path / "nope.pem"))
        assert rc == 2 and "cannot read" in err
        rc, out, err = await send("--tls-ca", str(pki.ca_file), "--tls-cert",
                                  str(pki.client_cert), "--tls-key", str(pki.client_key))
        assert rc == 0, (out, err)
        assert json.loads(out)["status"] == "applied"
        assert model.vent == 42.0
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await service.aclose()
        await outbox.close()
        await plant.stop()
