"""ThingsBoard IoT Gateway as the peer of `benchmarks.peer`: its own venv, its config files, its
process, and the getSessionLimits responder it waits for before it sends anything.

The venv lives in ``benchmarks/.peer-venv/`` (git-ignored), made on first use with
``python3 -m venv`` and pip (the registry the machine is set up with), and reused after. Its
Modbus connector force-installs pymodbus 3.9.2 (and pyserial, pyserial-asyncio) at import time
when they are missing or another version: pre-installing exactly those keeps it from running pip
while it starts. It is never installed into the project's venv (ours pins pymodbus 3.16).

Nothing leaves loopback: MQTT goes to the local Mosquitto, and the gateway's update check (an
HTTPS post to its vendor at start and hourly) is switched off in the launcher; HTTP(S) proxies
point at a closed loopback port, so anything else that tried would fail locally.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV = HERE / ".peer-venv"
TB_VERSION = "3.8.5"
#: What the venv holds: the gateway, and what its Modbus connector would otherwise pip-install.
REQUIREMENTS = [f"thingsboard-gateway=={TB_VERSION}", "pymodbus==3.9.2", "pyserial==3.5",
                "pyserial-asyncio==0.6"]
_MARKER = VENV / ".installed"

RPC_REQUEST = "v1/devices/me/rpc/request/"
RPC_RESPONSE = "v1/devices/me/rpc/response/"
TELEMETRY_TOPIC = "v1/gateway/telemetry"

#: Started by the TB venv's python: no update check (it would post to the vendor), then the
#: gateway's own entry point (config from $TB_GW_CONFIG_DIR).
_LAUNCHER = """
from thingsboard_gateway.tb_utility import tb_updater
tb_updater.TBUpdater.check_for_new_version = lambda self: None
from thingsboard_gateway.tb_gateway import daemon
daemon()
"""


class TbUnavailable(RuntimeError):
    """ThingsBoard IoT Gateway cannot be installed or started here."""


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv(log: Any = None) -> Path:
    """The TB venv's python, creating the venv on first use (a minute or so)."""
    want = "\n".join(REQUIREMENTS)
    py = venv_python()
    if py.exists() and _MARKER.exists() and _MARKER.read_text().strip() == want:
        return py
    say = log or (lambda msg: None)
    say(f"creating {VENV} with {' '.join(REQUIREMENTS)} (first use only)")
    try:
        if not py.exists():
            try:
                subprocess.run(["python3", "-m", "venv", str(VENV)], check=True,
                               capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.CalledProcessError):
                # no python3 on PATH, or one without ensurepip: the interpreter running this
                subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True,
                               capture_output=True, text=True, timeout=300)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        *REQUIREMENTS], check=True, capture_output=True, text=True, timeout=1200)
        subprocess.run([str(py), "-c", "import thingsboard_gateway.tb_gateway, pymodbus, "
                        "serial_asyncio; assert pymodbus.__version__ == '3.9.2'"],
                       check=True, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        detail = getattr(e, "stderr", None) or str(e)
        raise TbUnavailable(f"installing {' '.join(REQUIREMENTS)} into {VENV} failed: "
                            f"{str(detail).strip()[-1500:]}") from e
    _MARKER.write_text(want + "\n")
    return py


def write_config(conf_dir: Path, *, broker_port: int, ports: list[int], registers: int,
                 interval_s: float, qos: int, max_payload_bytes: int,
                 log_level: str = "WARNING") -> None:
    """tb_gateway.json, logs.json and modbus.json for ``len(ports)`` devices, device i at
    127.0.0.1:ports[i] unit 1, each with one timeseries entry over registers 0..registers-1
    read in one request (the connector's efficient layout)."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    no_limit = "0:0,"
    main = {
        "thingsboard": {
            "host": "127.0.0.1", "port": broker_port,
            "remoteShell": False, "remoteConfiguration": False, "latencyDebugMode": False,
            "statistics": {"enable": False, "statsSendPeriodInSeconds": 3600,
                           "customStatsSendPeriodInSeconds": 3600},
            "deviceFiltering": {"enable": False},
            "maxPayloadSizeBytes": max_payload_bytes, "minPackSendDelayMS": 50,
            "minPackSizeToSend": 500, "checkConnectorsConfigurationInSeconds": 3600,
            "handleDeviceRenaming": False,
            "security": {"type": "accessToken", "accessToken": "bench-peer"},
            "qos": qos,
            "reportStrategy": {"type": "ON_RECEIVED"},
            "checkingDeviceActivity": {"checkDeviceInactivity": False},
            "rateLimits": no_limit, "dpRateLimits": no_limit, "messagesRateLimits": no_limit,
            "deviceMessagesRateLimits": no_limit, "deviceRateLimits": no_limit,
            "deviceDpRateLimits": no_limit,
        },
        "storage": {"type": "memory", "read_records_count": 100, "max_records_count": 100_000},
        "grpc": {"enabled": False},
        "connectors": [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json",
                        "logLevel": log_level}],
    }
    slaves = [{
        "host": "127.0.0.1", "port": port, "type": "tcp", "method": "socket", "unitId": 1,
        "deviceName": f"dev{i}", "deviceType": "meter", "timeout": 1, "byteOrder": "BIG",
        "wordOrder": "BIG", "retries": 0, "retryOnEmpty": False, "retryOnInvalid": False,
        "pollPeriod": round(interval_s * 1000), "connectAttemptTimeMs": 5000,
        "connectAttemptCount": 5, "waitAfterFailedAttemptsMs": 300000,
        "attributes": [],
        "timeseries": [{"tag": "r", "type": "16uint", "functionCode": 3, "objectsCount": 1,
                        "address": f"0-{registers - 1}", "maxRegistersPerRequest": registers}],
        "attributeUpdates": [], "rpc": [],
    } for i, port in enumerate(ports)]
    logs = {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"f": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "f",
                                 "level": "DEBUG", "stream": "ext://sys.stderr"}},
        "loggers": {
            # pymodbus 3.9.2 warns "BinaryPayloadDecoder is deprecated" on every decode: at
            # WARNING that would cost the peer a log line per register (ours mutes pymodbus too)
            "pymodbus": {"handlers": ["console"], "level": "ERROR", "propagate": False},
            **{name: {"handlers": ["console"], "level": log_level, "propagate": False}
               for name in ("service", "connector", "converter", "tb_connection", "storage",
                            "extension")}},
        "root": {"level": "WARNING", "handlers": ["console"]},
    }
    (conf_dir / "tb_gateway.json").write_text(json.dumps(main, indent=1))
    (conf_dir / "logs.json").write_text(json.dumps(logs, indent=1))
    (conf_dir / "modbus.json").write_text(json.dumps(
        {"name": "Modbus", "logLevel": log_level, "master": {"slaves": slaves}}, indent=1))
    (conf_dir / "logs").mkdir(exist_ok=True)


class SessionLimitsResponder:
    """Answers the gateway's getSessionLimits RPC with no rate limits (what a ThingsBoard server
    with limits switched off would say). Without the answer it sends nothing."""

    def __init__(self, broker_port: int, *, max_inflight: int = 10_000,
                 max_payload: int = 65_536) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.answered = 0
        self.reply = json.dumps({"rateLimits": {}, "gatewayRateLimits": {},
                                 "maxInflightMessages": max_inflight,
                                 "maxPayloadSize": max_payload}).encode()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"bench-peer-limits-{os.getpid()}")
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", broker_port)
        self._client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        client.subscribe(RPC_REQUEST + "+", qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(body, dict) and body.get("method") == "getSessionLimits":
            client.publish(RPC_RESPONSE + msg.topic[len(RPC_REQUEST):], self.reply, qos=1)
            self.answered += 1

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class TbGateway:
    """One ThingsBoard IoT Gateway process (its own session, so it can be stopped whole)."""

    def __init__(self, conf_dir: Path) -> None:
        self.conf_dir = conf_dir
        self.log_path = conf_dir / "tb-gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> TbGateway:
        env = dict(os.environ)
        env.update({"TB_GW_CONFIG_DIR": str(self.conf_dir) + os.sep, "PYTHONUNBUFFERED": "1",
                    "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                    "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
                    "NO_PROXY": "", "no_proxy": ""})
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([str(venv_python()), "-c", _LAUNCHER], cwd=self.conf_dir,
                                         env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise TbUnavailable(f"ThingsBoard IoT Gateway exited with {self.proc.returncode}: "
                                f"{self.tail()}")

    def tail(self, n: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGINT (its own stop handler), then SIGKILL to its process group after 10 s."""
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)  # threads/children it left behind, if any
        self.proc = None


def temp_conf_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="mrv-bench-peer-tb-"))


def wait_for(pred: Any, timeout_s: float, what: str, check: Any = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: nothing after {timeout_s:.0f} s")
        time.sleep(0.1)


__all__ = ["TELEMETRY_TOPIC", "SessionLimitsResponder", "TbGateway", "TbUnavailable",
           "ensure_venv", "temp_conf_dir", "wait_for", "write_config"]
