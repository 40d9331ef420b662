"""Floods and oversize payloads on the command topic (issue 11, items 2 and 19), against a
real Mosquitto with its default queue limits and the simulated PLC: junk is refused before the
command queue, so it never takes a valid command's place, and the service goes on."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from control._fair import FairQueue
from simulator import Mosquitto
from tests.test_control_support import AUDITOR, EPB, GW, MALLORY, harness, make_command

RATE_OK = {"points": [
    {"id": "vent.opening", "device": "boiler-room-plc", "address": 0, "type": "uint16",
     "scale": 0.1, "unit": "%", "min": 0, "max": 100, "max_step": 50,
     "rate_limit": {"max_writes": 10_000, "window_s": 60}},
    {"id": "burner.air_damper", "device": "boiler-room-plc", "address": 2,
     "type": "float32", "word_order": "CDAB", "unit": "%", "min": 20, "max": 80,
     "max_step": 10, "rate_limit": {"max_writes": 20, "window_s": 60}, "two_person": True}]}


def test_fair_queue_bounds_each_key_and_serves_round_robin() -> None:
    q: FairQueue[str] = FairQueue(2)
    assert q.put_nowait("a", "a1") and q.put_nowait("a", "a2")
    assert not q.put_nowait("a", "a3")  # a's queue is full ...
    assert q.put_nowait("b", "b1")  # ... b's is not
    assert q.put_nowait("c", "c1") and q.put_nowait("c", "c2")
    assert len(q) == 5 and q.waiting("a") == 2
    assert [q.get_nowait() for _ in range(5)] == ["a1", "b1", "c1", "a2", "c2"]
    with pytest.raises(IndexError):
        q.get_nowait()
    with pytest.raises(ValueError):
        FairQueue(0)


async def test_fair_queue_get_waits_for_a_put() -> None:
    q: FairQueue[int] = FairQueue(1)
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not getter.done()
    q.put_nowait("k", 7)
    assert await asyncio.wait_for(getter, 5) == 7


async def test_100_kb_of_brackets_while_the_queue_is_full(tmp_path: Path,
                                                         mosquitto: Mosquitto) -> None:
    """Item 2: with the queue full, the overloaded path parsed the payload without limits
    (``best_effort_id``): 100 kB of '[' overflowed the C stack (SIGSEGV, every restart)."""
    async with harness(tmp_path, mosquitto.port, extra={"command_queue": 2, **RATE_OK}) as h:
        lock = h.service._locks["vent.opening"]
        await lock.acquire()  # the command being handled waits at the point's lock
        first = make_command("30")
        await h.send_raw(first.to_bytes())
        store = await h.service.store()
        await h.wait_for(lambda: first.id in store.seen)  # taken from the queue, journaled
        queued = [make_command("35"), make_command("40")]
        for c in queued:
            await h.send_raw(c.to_bytes())
        over = await h.send(make_command("45"))  # the issuer's queue (2) is full
        assert (over["status"], over["reason"]) == ("rejected", "overloaded"), over
        await h.send_raw(b"[" * 100_000)
        await h.send_raw(b"[" * 16_000)  # under 16 KiB, but 16,000 levels deep
        await h.wait_for(lambda: len(h.anon_acks) >= 2)
        details = sorted(a["detail"] for a in h.anon_acks)
        assert "payload of 100000 bytes exceeds 16384" in details[1], details
        assert "nests deeper than 8 levels" in details[0], details
        assert all(a["reason"] == "malformed" for a in h.anon_acks)
        lock.release()
        for c in (first, *queued):
            await h.wait_for(lambda c=c: c.id in h.acks)  # type: ignore[misc]
            assert h.acks[c.id]["status"] == "applied", h.acks[c.id]
        assert (await h.send(make_command("50")))["status"] == "applied"  # and it goes on
        assert h.metrics.counters["control_commands_overloaded"] == 1


def _junk(n: int, replay: bytes) -> list[bytes]:
    """n invalid payloads of every class a stranger (or a replaying eavesdropper) can send."""
    now = time.time_ns() // 1_000_000
    out: list[bytes] = []
    for i in range(n):
        k = i % 9
        if k == 0:
            out.append(b"not json " + str(i).encode())
        elif k == 1:
            out.append(b"[" * 20_000 if i % 90 == 1 else b"{" * 100)
        elif k == 2:  # claims epb, signed by someone else: costs a signature check
            out.append(make_command("30", seed=MALLORY, cid=f"forged-{i}").to_bytes())
        elif k == 3:
            out.append(make_command("30", issuer="mallory", seed=MALLORY,
                                    cid=f"stranger-{i}").to_bytes())
        elif k == 4:
            out.append(make_command("30", cid=f"expired-{i}", not_before_ms=now - 120_000,
                                    expires_at_ms=now - 60_000).to_bytes())
        elif k == 5:
            out.append(replay)
        elif k == 6:
            d = make_command("30", cid=f"newline-{i}").to_json()
            d["value"] = "30\n"
            out.append(json.dumps(d).encode())
        elif k == 7:
            out.append(make_command("30", gateway="plant-b-gw1", cid=f"other-gw-{i}").to_bytes())
        else:
            out.append(make_command("46", point="burner.air_damper", cid=f"one-person-{i}",
                                    seed=EPB).to_bytes())  # two-person point, no approval
    return out


@pytest.mark.parametrize("qos", [0, 1])
async def test_a_flood_of_invalid_payloads_cannot_starve_valid_commands(
        tmp_path: Path, mosquitto: Mosquitto, qos: int) -> None:
    """Item 19: 3,000 invalid payloads (QoS 0: as fast as the socket takes them; QoS 1: as
    fast as the broker acknowledges them) interleaved with 30 valid signed commands, a command
    queue of 32 (room for every valid command, so only junk could take their places),
    Mosquitto's default limits: every valid command gets exactly one ack, and it is not
    ``overloaded``; the junk gets at most ``reject_acks_per_s`` nacks a second."""
    n_junk, n_valid = 3000, 30
    async with harness(tmp_path, mosquitto.port,
                       extra={"command_queue": n_valid + 2, **RATE_OK}) as h:
        seen = make_command("21")
        assert (await h.send(seen))["status"] == "applied"
        junk = _junk(n_junk, seen.to_bytes())
        base = time.time_ns() // 1000 + 10**6  # above make_command's default seq (now, µs)
        valid = [make_command("30" if i % 2 else "31", seq=base + i) for i in range(n_valid)]
        valid[-1] = make_command("40", point="burner.air_damper", seq=base + n_valid,
                                 approvers=(("auditor", AUDITOR),))  # two-person, approved
        every = n_junk // n_valid
        t0 = time.perf_counter()
        topic = f"mrv/{GW}/cmd"
        for j in range(n_valid):  # each valid command after `every` junk payloads
            batch = junk[j * every:(j + 1) * every]
            if qos == 0:  # straight onto the socket, no waiting
                for payload in batch:
                    h.client._client.publish(topic, payload, qos=0)
            else:  # all in flight at once (the client's and the broker's windows permitting)
                await asyncio.gather(*(h.client.publish(topic, p, qos=1) for p in batch))
            await h.client.publish(topic, valid[j].to_bytes(), qos=1)
        await h.wait_for(lambda: all(c.id in h.acks for c in valid), timeout=120)
        seconds = time.perf_counter() - t0
        sentinel = make_command("33", seq=base + n_valid + 1)  # acks go out in order: all earlier are in
        assert (await h.send(sentinel))["status"] == "applied"
        for c in valid:
            assert h.ack_counts[c.id] == 1, (c.id, h.ack_counts[c.id])
            assert h.acks[c.id]["status"] == "applied", h.acks[c.id]
        m = h.metrics.counters
        assert m["control_commands_overloaded"] == 0
        assert m["control_commands_received"] == n_junk + n_valid + 2
        # the junk's nacks are budgeted (50 a second, burst 50); the rest are counted
        junk_acks = m["control_ack_rejected"]
        assert junk_acks + m["control_acks_suppressed"] == n_junk
        assert junk_acks <= 50 + 50 * (seconds + 5), (junk_acks, seconds)
        assert m["task_restarts"] == 0
