"""``mrv-command``: what a governance body runs to command a gateway.

    mrv-command keygen epb.key                       # Ed25519 key; prints the public key
    mrv-command sign --key epb.key --issuer epb --gateway plant-a-gw1 \\
        --point vent.opening --value 40 --unit % -o cmd.json
    mrv-command approve --key auditor.key --key-id auditor cmd.json -o cmd.json
    mrv-command send cmd.json --broker 10.0.0.9:1883 --gateway-key 0x...
    mrv-command watch --broker 10.0.0.9:1883 --gateway plant-a-gw1 --gateway-key 0x... \\
        [--count 1000] [--timeout 60]            # live readings, each signature checked

Exit codes: 0 applied (watch: every reading verified), 1 rejected or failed (or the ack's
signature is wrong; watch: a reading did not verify or a message was malformed), 2 bad input,
3 no ack in time or the broker could not be reached (watch: fewer than --count readings
within --timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_UNREACHABLE = 0, 1, 2, 3
_VALUE = re.compile(r"-?(0|[1-9][0-9]{0,14})(\.[0-9]{1,9})?")


class CliError(Exception):
    pass


def _read_seed(path: str) -> bytes:
    try:
        text = Path(path).read_text().strip().removeprefix("0x")
        seed = bytes.fromhex(text)
    except OSError as e:
        raise CliError(f"cannot read key file {path}: {e.strerror}") from None
    except ValueError:
        raise CliError(f"key file {path} is not hex") from None
    if len(seed) != 32:
        raise CliError(f"key file {path} holds {len(seed)} bytes, expected a 32-byte seed")
    return seed


def _cmd_keygen(args: argparse.Namespace) -> int:
    import nacl.signing

    path = Path(args.keyfile)
    if path.exists():
        raise CliError(f"{path} exists: refusing to overwrite a key")
    key = nacl.signing.SigningKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(bytes(key).hex() + "\n")
    print(json.dumps({"key_file": str(path),
                      "public_key": "0x" + bytes(key.verify_key).hex()}, indent=2))
    return EXIT_OK


def _cmd_pubkey(args: argparse.Namespace) -> int:
    from control._envelope import public_key_of

    print("0x" + public_key_of(_read_seed(args.keyfile)).hex())
    return EXIT_OK


def _value(s: str) -> str:
    if _VALUE.fullmatch(s):
        return s
    from control._envelope import format_value

    try:
        return format_value(float(s))
    except ValueError:
        raise CliError(f"--value {s!r} is not a number") from None


def _write(text: str, out: str | None) -> None:
    if out:
        Path(out).write_text(text + "\n")
    else:
        print(text)


def _load(src: str) -> Any:
    from control._envelope import EnvelopeError, parse_command

    try:
        data = sys.stdin.buffer.read() if src == "-" else Path(src).read_bytes()
    except OSError as e:
        raise CliError(f"cannot read {src}: {e.strerror}") from None
    try:
        return parse_command(data)
    except EnvelopeError as e:
        raise CliError(f"{src}: {e.reason}: {e.detail}") from None


def _cmd_sign(args: argparse.Namespace) -> int:
    from control._envelope import Command, sign_command

    seed = _read_seed(args.key)
    now = time.time_ns() // 1_000_000
    nb = args.not_before_ms if args.not_before_ms is not None else now
    cmd = Command(id=args.id or uuid.uuid4().hex, gateway=args.gateway, point=args.point,
                  value=_value(args.value), unit=args.unit, issued_at_ms=min(now, nb),
                  not_before_ms=nb, expires_at_ms=nb + round(args.ttl * 1000),
                  seq=args.seq if args.seq is not None else now, issuer=args.issuer)
    cmd = sign_command(cmd, seed)
    _check(cmd)
    _write(json.dumps(cmd.to_json(), indent=2), args.output)
    return EXIT_OK


def _check(cmd: Any) -> None:
    """What the sender builds must parse as the gateway will parse it."""
    from control._envelope import EnvelopeError, parse_command

    try:
        parse_command(cmd.to_bytes())
    except EnvelopeError as e:
        raise CliError(f"the command would be refused as {e.reason}: {e.detail}") from None


def _cmd_approve(args: argparse.Namespace) -> int:
    from control._envelope import approve_command

    cmd = approve_command(_load(args.command), args.key_id, _read_seed(args.key))
    _check(cmd)
    _write(json.dumps(cmd.to_json(), indent=2), args.output)
    return EXIT_OK


def _broker(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise CliError(f"--broker {s!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _tls_context(args: argparse.Namespace) -> Any:
    """The TLS context of ``--tls`` / ``--tls-ca`` / ``--tls-cert`` / ``--tls-key``, or None."""
    if not (args.tls or args.tls_ca or args.tls_cert or args.tls_key):
        return None
    from pydantic import ValidationError

    from mrv_core import TlsConfig, client_context

    try:
        tls = TlsConfig.model_validate(
            {"ca_file": args.tls_ca, "cert_file": args.tls_cert, "key_file": args.tls_key},
            context={"base_dir": Path.cwd()})
    except ValidationError as e:
        raise CliError("TLS: " + "; ".join(str(err["msg"]).removeprefix("Value error, ")
                                           for err in e.errors())) from None
    return client_context(tls)


def _gateway_key(s: str) -> bytes:
    try:
        key = bytes.fromhex(s.removeprefix("0x"))
    except ValueError:
        raise CliError("--gateway-key is not hex") from None
    if len(key) != 32:
        raise CliError("--gateway-key must be a 32-byte Ed25519 public key")
    return key


async def _send(args: argparse.Namespace) -> int:
    import aiomqtt

    from control._envelope import parse_ack_message, verify_ack

    cmd = _load(args.command)
    host, port = _broker(args.broker)
    cmd_topic = f"{args.prefix}/{cmd.gateway}/cmd"
    ack_topic = f"{args.prefix}/{cmd.gateway}/ack"
    gw_key = _gateway_key(args.gateway_key) if args.gateway_key else None
    tls = _tls_context(args)
    t0 = time.perf_counter()
    try:
        async with aiomqtt.Client(host, port, username=args.username, password=args.password,
                                  identifier=f"mrv-command-{uuid.uuid4().hex[:12]}",
                                  tls_context=tls,
                                  socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
                                  ) as client:
            await client.subscribe(ack_topic, qos=1)
            await client.publish(cmd_topic, cmd.to_bytes(), qos=1)
            async with asyncio.timeout(args.timeout):
                async for m in client.messages:
                    try:
                        ack = parse_ack_message(bytes(m.payload))
                    except (ValueError, TypeError):
                        continue
                    if isinstance(ack, dict) and ack.get("id") == cmd.id:
                        break
    except TimeoutError:
        print(f"error: no ack for {cmd.id} within {args.timeout} s", file=sys.stderr)
        return EXIT_UNREACHABLE
    except aiomqtt.MqttError as e:
        print(f"error: broker {host}:{port}: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    ms = (time.perf_counter() - t0) * 1000
    print(json.dumps(ack, indent=2))
    if gw_key is not None and not verify_ack(ack, gw_key):
        print("error: the ack's signature does not verify with --gateway-key", file=sys.stderr)
        return EXIT_FAILED
    print(f"{ack.get('status')}{' (' + str(ack.get('reason')) + ')' if ack.get('reason') else ''}"
          f" in {ms:.1f} ms", file=sys.stderr)
    return EXIT_OK if ack.get("status") == "applied" else EXIT_FAILED


def _check_message(payload: bytes, gateway: str, key: bytes) -> list[dict[str, Any]]:
    """The readings of one telemetry message, each with ``"verified"``: its record signature
    checks out with ``key`` and the message is from ``gateway``. Raises ``ValueError`` for a
    message that is not telemetry."""
    from control._telemetry import MAX_TELEMETRY_BYTES, MAX_TELEMETRY_DEPTH, verify_telemetry
    from mrv_core import loads_bounded

    checked = verify_telemetry(payload, key)
    doc = loads_bounded(payload, max_bytes=MAX_TELEMETRY_BYTES, max_depth=MAX_TELEMETRY_DEPTH)
    same_gateway = doc.get("gateway") == gateway
    out = []
    for it, (seq, ok) in zip(doc["readings"], checked, strict=True):
        row = {k: it.get(k) for k in ("seq", "point", "ts_ns", "value", "unit", "quality")}
        row["seq"] = seq
        row["verified"] = ok and same_gateway
        out.append(row)
    return out


async def _watch(args: argparse.Namespace) -> int:
    """Subscribe to a gateway's live telemetry and check each reading's record signature."""
    import aiomqtt

    key = _gateway_key(args.gateway_key)
    host, port = _broker(args.broker)
    tls = _tls_context(args)
    topic = f"{args.prefix}/{args.gateway}/telemetry"
    seen = verified = malformed = 0
    timed_out = subscribed = False
    try:
        async with aiomqtt.Client(host, port, username=args.username, password=args.password,
                                  identifier=f"mrv-command-{uuid.uuid4().hex[:12]}",
                                  tls_context=tls) as client:
            await client.subscribe(topic, qos=0)
            subscribed = True
            print(f"watching {topic}", file=sys.stderr, flush=True)
            try:
                async with asyncio.timeout(args.timeout):
                    async for m in client.messages:
                        payload = bytes(m.payload) if isinstance(m.payload, bytes | bytearray) \
                            else str(m.payload).encode()
                        try:
                            rows = _check_message(payload, args.gateway, key)
                        except (ValueError, KeyError, TypeError, AttributeError) as e:
                            malformed += 1
                            print(f"error: rejected a message on {topic} that is not telemetry:"
                                  f" {e}", file=sys.stderr, flush=True)
                            continue
                        for row in rows:
                            seen += 1
                            verified += bool(row["verified"])
                            print(json.dumps(row, separators=(",", ":")), flush=True)
                            if args.count is not None and seen >= args.count:
                                break
                        if args.count is not None and seen >= args.count:
                            break
            except TimeoutError:
                timed_out = True
    except aiomqtt.MqttError as e:
        print(f"error: broker {host}:{port}: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:  # also when interrupted (Ctrl-C) or the broker went away
        if subscribed:
            print(f"{seen} readings: {verified} verified, {seen - verified} NOT verified; "
                  f"{malformed} malformed messages", file=sys.stderr, flush=True)
    bad = seen - verified
    if bad or malformed:
        return EXIT_FAILED
    if seen == 0 or (args.count is not None and seen < args.count):
        print(f"error: {seen} of {args.count or 'any'} readings"
              f"{f' within {args.timeout} s' if timed_out else ''}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return EXIT_OK


def _tls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls", action="store_true",
                   help="TLS to the broker, verified with the system's trust store")
    p.add_argument("--tls-ca", metavar="FILE", help="TLS, the broker verified with this CA (PEM)")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate (PEM), with --tls-key")
    p.add_argument("--tls-key", metavar="FILE", help="the client certificate's private key")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mrv-command", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("keygen", help="create an Ed25519 key file (hex seed, mode 0600)")
    p.add_argument("keyfile")
    p = sub.add_parser("pubkey", help="print the public key of a key file")
    p.add_argument("keyfile")
    p = sub.add_parser("sign", help="build and sign a command envelope (JSON)")
    p.add_argument("--key", required=True, help="issuer's key file")
    p.add_argument("--issuer", required=True, help="issuer key id, as in the gateway's config")
    p.add_argument("--gateway", required=True)
    p.add_argument("--point", required=True)
    p.add_argument("--value", required=True, help='decimal, e.g. 40 or 42.5')
    p.add_argument("--unit", required=True, help="the point's unit, e.g. %%")
    p.add_argument("--seq", type=int, help="issuer sequence (default: now in ms)")
    p.add_argument("--id", help="command id (default: random)")
    p.add_argument("--ttl", type=float, default=60.0, help="seconds from not-before to expiry")
    p.add_argument("--not-before-ms", type=int, help="default: now")
    p.add_argument("-o", "--output")
    p = sub.add_parser("approve", help="add a second person's signature")
    p.add_argument("command", help="envelope file, or - for stdin")
    p.add_argument("--key", required=True)
    p.add_argument("--key-id", required=True)
    p.add_argument("-o", "--output")
    p = sub.add_parser("send", help="publish a signed command and wait for its ack")
    p.add_argument("command", help="envelope file, or - for stdin")
    p.add_argument("--broker", required=True, help="HOST:PORT")
    p.add_argument("--prefix", default="mrv", help="topic prefix (default mrv)")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--gateway-key", help="the gateway's Ed25519 public key: verify the ack")
    p.add_argument("--username")
    p.add_argument("--password")
    _tls_args(p)
    p = sub.add_parser("watch", help="print a gateway's live readings, each signature checked")
    p.add_argument("--broker", required=True, help="HOST:PORT")
    p.add_argument("--gateway", required=True, help="gateway id")
    p.add_argument("--gateway-key", required=True,
                   help="the gateway's Ed25519 public key, as registered on the ledger")
    p.add_argument("--prefix", default="mrv", help="topic prefix (default mrv)")
    p.add_argument("--count", type=int, help="stop after this many readings")
    p.add_argument("--timeout", type=float, help="stop after this many seconds")
    p.add_argument("--username")
    p.add_argument("--password")
    _tls_args(p)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "send":
            return asyncio.run(_send(args))
        if args.cmd == "watch":
            return asyncio.run(_watch(args))
        return {"keygen": _cmd_keygen, "pubkey": _cmd_pubkey, "sign": _cmd_sign,
                "approve": _cmd_approve}[args.cmd](args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

