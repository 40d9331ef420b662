"""A mutation fuzzer for every parser of untrusted input, in two forms.

Each area lists its parsers as `Target`s in a ``targets_<area>.py`` module beside this file
(``TARGETS: list[Target]``). A target takes raw bytes, and either returns (accepted) or raises one
of its declared rejection types (a clear, typed rejection). Anything else — another exception,
a recursion error, a hang, a crash of the process — is a finding.

- Short form, in ``make test``: ``tests/test_fuzz.py`` runs every target on a few thousand
  inputs from a fixed seed.
- Long form, one command: ``make fuzz`` (``python -m tests.fuzz --inputs 1000000``) runs every
  target on a million inputs and prints a table (and ``--json FILE``); exit 1 on any finding.

Inputs are the target's seeds mutated at random (bit flips, interesting bytes and numbers, cut,
insert, repeat, splice, deep nesting, huge digit runs, invalid UTF-8) plus pure random bytes;
each input is at most ``Target.max_len`` bytes unless the target asks for oversize inputs too
(``oversize``), which tests the limits applied before parsing.
"""

from __future__ import annotations

import importlib
import pkgutil
import random
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

__all__ = ["Finding", "Result", "Target", "all_targets", "mutate", "run_target"]


@dataclass(frozen=True)
class Target:
    """One parser of untrusted input."""

    name: str
    run: Callable[[bytes], object]
    rejects: tuple[type[BaseException], ...]
    seeds: tuple[bytes, ...]
    max_len: int = 4096
    # Also try inputs far larger than max_len (a parser must refuse them before parsing).
    oversize: int = 0


@dataclass
class Finding:
    target: str
    data: bytes
    error: str

    def __str__(self) -> str:
        shown = self.data[:200]
        more = f" (+{len(self.data) - 200} bytes)" if len(self.data) > 200 else ""
        return f"{self.target}: {self.error}\n  input: {shown!r}{more}"


@dataclass
class Result:
    target: str
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)


_INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x0D, 0x22, 0x5C, 0x2C, 0x3B, 0x3D,
                      0x26, 0x5B, 0x7B, 0x7D, 0x5D, 0x2D, 0x2E, 0x65, 0x68, 0x16)
_INTERESTING_TOKENS = (b"-1", b"0", b"1e308", b"1e309", b"-1e309", b"NaN", b"Infinity", b"-0",
                       b"9" * 40, b"9" * 5000, b"18446744073709551616", b"65536", b"4294967296",
                       b"99991231235959", b"0x", b"\"", b"\\u0000", b"\xc3\x28", b"\xff\xfe",
                       b"null", b"true", b"[]", b"{}", b"&&", b";;", b"==", b"\r\n", b"\n",
                       b"2147483648", b"-9223372036854775809", b"1.0000001", b"\x00" * 8)


def mutate(rng: random.Random, seeds: Sequence[bytes], max_len: int) -> bytes:
    """One fuzz input derived from the seeds."""
    r = rng.random()
    if r < 0.05 or not seeds:
        return rng.randbytes(rng.randint(0, min(max_len, 256)))
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.choice((1, 1, 1, 2, 3, 5, 8))):
        op = rng.randrange(10)
        n = len(data)
        if op == 0 and n:  # flip a bit
            i = rng.randrange(n)
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # set an interesting byte
            data[rng.randrange(n)] = rng.choice(_INTERESTING_BYTES)
        elif op == 2 and n:  # cut a range
            i = rng.randrange(n)
            del data[i:i + rng.randint(1, max(1, n - i))]
        elif op == 3:  # insert random bytes
            i = rng.randint(0, n)
            data[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 4:  # insert an interesting token
            i = rng.randint(0, n)
            data[i:i] = rng.choice(_INTERESTING_TOKENS)
        elif op == 5 and n:  # replace a digit run with another number
            i = rng.randrange(n)
            j = i
            while j < n and 0x30 <= data[j] <= 0x39:
                j += 1
            data[i:j] = rng.choice(_INTERESTING_TOKENS)
        elif op == 6 and n:  # repeat a range
            i = rng.randrange(n)
            chunk = data[i:i + rng.randint(1, 32)]
            data[i:i] = chunk * rng.randint(1, 64)
        elif op == 7:  # splice another seed
            other = rng.choice(seeds)
            if other:
                i, j = rng.randint(0, n), rng.randrange(len(other))
                data[i:] = other[j:]
        elif op == 8:  # deep nesting
            depth = rng.choice((10, 100, 1000, 5000))
            opener, closer = rng.choice(((b"[", b"]"), (b"{\"a\":", b"}"), (b"(", b")")))
            i = rng.randint(0, n)
            data[i:i] = opener * depth + (closer * depth if rng.random() < 0.5 else b"")
        elif op == 9 and n:  # swap two bytes
            i, j = rng.randrange(n), rng.randrange(n)
            data[i], data[j] = data[j], data[i]
    return bytes(data[:max_len])


def _inputs(target: Target, rng: random.Random, count: int) -> Iterator[bytes]:
    yield from target.seeds
    for i in range(max(0, count - len(target.seeds))):
        if target.oversize and i % 500 == 0:
            filler = rng.choice((b"[", b"{\"a\":", b"9", b"a", b"\x00"))
            yield filler * target.oversize
        else:
            yield mutate(rng, target.seeds, target.max_len)


def run_target(target: Target, count: int, seed: int = 0, max_findings: int = 5) -> Result:
    """Run ``count`` inputs through a target; collect at most ``max_findings`` findings."""
    rng = random.Random(f"{seed}:{target.name}")
    res = Result(target.name)
    t0 = time.perf_counter()
    for data in _inputs(target, rng, count):
        res.inputs += 1
        try:
            target.run(data)
        except target.rejects:
            res.rejected += 1
        except Exception as e:
            if len(res.findings) < max_findings:
                tb = traceback.format_exception(type(e), e, e.__traceback__, limit=-3)
                res.findings.append(Finding(target.name, data, "".join(tb).strip()))
            else:
                res.findings.append(Finding(target.name, b"", "(more)"))
                break
        else:
            res.accepted += 1
    res.seconds = time.perf_counter() - t0
    return res


def all_targets() -> list[Target]:
    """Every target of every ``targets_*`` module beside this file."""
    out: list[Target] = []
    for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if m.name.startswith("targets_"):
            mod = importlib.import_module(f"{__name__}.{m.name}")
            out.extend(mod.TARGETS)
    names = [t.name for t in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise RuntimeError(f"fuzz targets named twice: {sorted(dup)}")
    return out
