"""Issue 11: a config is bounded before and while it is parsed (size, nesting depth, values with
aliases expanded, number ranges), and every bad config gets a clear error naming its line, with
the documented exit code and no traceback (item 11)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import config._loader as loader
from config import ConfigError, load_config, parse_config
from config._loader import MAX_CONFIG_BYTES, MAX_DEPTH, MAX_VALUES
from tests.test_config import GOOD, _edit

ROOT = Path(__file__).resolve().parent.parent

# item 11: each made `check-config` print a traceback; (config, line named, message fragment)
ITEM_11 = {
    "timestamp-x": (_edit(GOOD, "  id: gw1\n", "  id: gw1\n  log_level: !!timestamp x\n"), 3,
                    "cannot read 'x' as !!timestamp"),
    "float-x": (_edit(GOOD, "chain_id: 31337", "chain_id: !!float x"), 6,
                "cannot read 'x' as !!float"),
    "int-0x": (_edit(GOOD, "chain_id: 31337", "chain_id: !!int 0x"), 6,
               "cannot read '0x' as !!int"),
    "duplicate-anchor": (_edit(_edit(GOOD, "host: 127.0.0.1", "host: &h 127.0.0.1"),
                               "signing_key: keys/ed25519.key",
                               "signing_key: &h keys/ed25519.key"), 12,
                         "found duplicate anchor 'h' (first at line 3)"),
    "int-of-5000-digits": (_edit(GOOD, "chain_id: 31337", "chain_id: " + "9" * 5000), 6,
                           "(5,000 characters)' as !!int"),
    "bad-date": (_edit(GOOD, "  id: gw1\n", "  id: gw1\n  log_level: 2026-13-45\n"), 3,
                 "cannot read '2026-13-45' as !!timestamp"),
    "map-tag-on-a-scalar": (_edit(GOOD, "  id: gw1\n", "  id: gw1\n  log_level: !!map x\n"), 3,
                            "is for a collection, not for a scalar"),
}


@pytest.mark.parametrize(("text", "line", "fragment"), list(ITEM_11.values()), ids=list(ITEM_11))
def test_bad_scalars_and_anchors_are_config_errors_with_the_line(text: str, line: int,
                                                                 fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(text, source="bad.yaml")
    [issue] = ei.value.issues
    assert issue.line == line and fragment in issue.message, issue


def test_check_config_names_the_line_without_a_traceback(tmp_path: Path) -> None:
    """Item 11 end to end: exit 2 (bad input, docs/operations.md) and one line per problem."""
    files = []
    for name, (text, line, fragment) in ITEM_11.items():
        f = tmp_path / f"{name}.yaml"
        f.write_text(text)
        files.append((f, line, fragment))
    exe = [sys.executable, "-m", "gateway._cli", "check-config"]
    r = subprocess.run([*exe, *(str(f) for f, _, _ in files)], capture_output=True, text=True,
                       check=False, cwd=ROOT)
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert "Traceback" not in r.stderr
    for f, line, fragment in files:
        assert f"{f}: 1 problem(s):\n  line {line}: <document>: not valid YAML: " in r.stderr
        block = r.stderr.split(f"{f}: ", 1)[1].split("\n")[1]
        assert fragment in block, block


# Deep nesting: at Python's default recursion limit (1000), in a process that imports only the
# config package (no dependency raises the limit for it), every depth is a ConfigError.
_DEPTH_PROBE = textwrap.dedent("""
    import sys
    sys.setrecursionlimit(1000)
    from config import ConfigError, parse_config
    assert sys.getrecursionlimit() == 1000, sys.getrecursionlimit()
    assert "py_ecc" not in sys.modules
    def nested(kind, depth):
        if kind == "flow-seq":
            return "a: " + "[" * depth + "]" * depth + "\\n"
        if kind == "flow-map":
            return "a: " + "{b: " * depth + "1" + "}" * depth + "\\n"
        if kind == "block-map":
            return "".join(" " * i + f"k{i}:\\n" for i in range(depth)) + " " * depth + "v\\n"
        if kind == "block-seq":
            return "a:\\n" + "".join(" " * i + "-\\n" for i in range(1, depth + 1)) + " " * depth + " 1\\n"
        if kind == "unclosed":
            return "a: " + "[" * depth
        if kind == "key":
            return "? " + "[" * depth + "]" * depth + "\\n: 1\\n"
        raise AssertionError(kind)
    for kind in ("flow-seq", "flow-map", "block-map", "block-seq", "unclosed", "key"):
        # (block styles indent: their text grows with the square of the depth)
        for depth in (MAX_DEPTH + 1, 999, 1000, 5000) + (() if "block" in kind else (100_000,)):
            try:
                parse_config(nested(kind, depth))
            except ConfigError as e:
                msg = str(e)
                assert "nested more than" in msg or "nesting depth" in msg, (kind, depth, msg)
            else:
                raise AssertionError(f"{kind} at depth {depth} was accepted")
    print("ok")
""").replace("MAX_DEPTH", str(MAX_DEPTH))


def test_deep_nesting_is_a_config_error_at_the_default_recursion_limit() -> None:
    r = subprocess.run([sys.executable, "-c", _DEPTH_PROBE], capture_output=True, text=True,
                       check=False, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"})
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr[-3000:]


def test_nesting_up_to_the_limit_is_parsed() -> None:
    b = loader._EventBuilder("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n")
    data = b.load()
    for _ in range(MAX_DEPTH - 1):
        data = data["a"] if isinstance(data, dict) else data[0]
    assert data == []


def _laughs(levels: int, width: int = 10) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_aliases_cannot_expand_beyond_the_value_limit() -> None:
    """A billion laughs (10^9 values from 100 short lines) is refused on the line where the
    count passes MAX_VALUES, without building it; a config of aliases below it loads."""
    with pytest.raises(ConfigError) as ei:
        parse_config(_laughs(9))
    [issue] = ei.value.issues
    # line i holds 10^(i+1) values (plus the lists); the sum passes 2,000,000 on line 7
    total, line = 0, 0
    while total <= MAX_VALUES:
        line += 1
        total += sum(10**k for k in range(1, line + 1)) + 1
    assert issue.line == line and "more than 2,000,000 values" in issue.message, issue
    small = loader._EventBuilder(_laughs(4))
    data = small.load()
    assert len(data["a3"]) == 10 and data["a3"][0][0][0] == ["lol"] * 10


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(GOOD.encode() + b"#" * (MAX_CONFIG_BYTES - len(GOOD)))
    assert load_config(big).gateway.id == "gw1"  # exactly at the limit: fine (comments)
    with big.open("ab") as f:
        f.write(b"#")
    with pytest.raises(ConfigError, match="more than 16,777,216 bytes") as ei:
        load_config(big)
    assert ei.value.issues[0].path == ""
    with pytest.raises(ConfigError, match="more than 16,777,216 characters"):
        parse_config(GOOD + "#" * MAX_CONFIG_BYTES)
    # a device that never ends is read no further than the limit
    with pytest.raises(ConfigError, match="more than 16,777,216 bytes"):
        load_config("/dev/zero")
    # the limit is read when it is applied (a smaller one for this test)
    monkeypatch.setattr(loader, "MAX_CONFIG_BYTES", len(GOOD) - 1)
    with pytest.raises(ConfigError, match="checked before parsing"):
        parse_config(GOOD)


# Number ranges the schema lacked: each was accepted before issue 11.
RANGES = {
    "chain-id-above-eip-2294": (_edit(GOOD, "chain_id: 31337", f"chain_id: {2**63}"),
                                "chain.chain_id", "less than or equal to 9223372036854775771"),
    "scale-nan": (_edit(GOOD, "scale: 0.01", "scale: .nan"), "devices[0].points[0].scale",
                  "finite number"),
    "offset-inf": (_edit(GOOD, "scale: 0.01", "scale: 0.01, offset: .inf"),
                   "devices[0].points[0].offset", "finite number"),
    "receipt-timeout-a-year": (_edit(GOOD, "  account_key:", "  receipt_timeout_s: 31536000\n"
                                     "  account_key:"), "chain.receipt_timeout_s",
                               "less than or equal to 86400"),
    "retry-forever": (_edit(GOOD, "  account_key:", "  retry: {max_s: 1e300}\n  account_key:"),
                      "chain.retry.max_s", "less than or equal to 86400"),
    "health-port": (GOOD + "health: {listen: '127.0.0.1:99999'}\n", "health.listen",
                    "above 65535"),
    "disk-budget": (GOOD + "outbox: {disk_budget_mb: 1e300}\n", "outbox.disk_budget_mb",
                    "less than or equal to 1000000000"),
    "gas-price-above-uint256": (_edit(GOOD, "  account_key:", f"  gas_price_wei: {2**256}\n"
                                      "  account_key:"), "chain.gas_price_wei",
                                "less than or equal to"),
    "long-host": (_edit(GOOD, "host: 127.0.0.1", "host: " + "h" * 300), "devices[0].host",
                  "at most 253 characters"),
    "flatline-for-ever": (_edit(GOOD, "unit: kW}", "unit: kW, checks: {flatline: "
                                "{duration_s: 1e12}}}"),
                          "devices[0].points[1].checks.flatline.duration_s",
                          "less than or equal to 3155760000"),
    "substitution-lookback": (GOOD + "aggregation: {points: [{point: m.power, "
                              "expected_per_minute: 60, substitution: {tiers: [{min_availability:"
                              " 0, methods: [lookback_max]}], lookback_hours: 1000000000}}]}\n",
                              "aggregation.points[0].substitution.lookback_hours",
                              "less than or equal to 87660"),
    "readings-per-minute": (GOOD + "aggregation: {points: [{point: m.power, "
                            "expected_per_minute: 1e12}]}\n",
                            "aggregation.points[0].expected_per_minute",
                            "less than or equal to 60000"),
    "future-skew": (_edit(GOOD, "unit: kW}", "unit: kW, checks: {timestamps: "
                          "{max_future_s: 1e300}}}"),
                    "devices[0].points[1].checks.timestamps.max_future_s",
                    "less than or equal to 3155760000"),
}


@pytest.mark.parametrize(("text", "path", "fragment"), list(RANGES.values()), ids=list(RANGES))
def test_number_ranges(text: str, path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(text, source="bad.yaml")
    shown = "\n".join(map(str, ei.value.issues))
    assert any(i.path == path and fragment in i.message for i in ei.value.issues), shown


def test_a_huge_bad_value_is_shown_shortened() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(_edit(GOOD, "id: gw1", "id: '" + "x" * 100_000 + "'"))
    [issue] = ei.value.issues
    assert issue.path == "gateway.id" and "(100,002 characters)" in issue.message
    assert len(str(issue)) < 300


def test_at_most_max_issues_problems_are_listed() -> None:
    points = "".join(f"      - {{id: p{i}, address: {i}, type: float, unit: kW}}\n"
                     for i in range(loader.MAX_ISSUES + 50))
    text = GOOD[:GOOD.index("    points:")] + "    points:\n" + points
    with pytest.raises(ConfigError) as ei:
        parse_config(text)
    issues = ei.value.issues
    assert len(issues) == loader.MAX_ISSUES + 1
    assert issues[0].path == "devices[0].points[0].type" and issues[0].line == 14
    assert issues[-1].message == "... and 50 more problem(s) not shown"


@pytest.mark.parametrize("book", [
    "[" * 1_000_000,                                   # deep: once a SIGSEGV of the daemon
    '{"contracts": {"EmissionsLedger": "0x12"}}',      # not an address
    '{"contracts": 5}',                                 # not an address book
    "x" * ((1 << 20) + 1),                              # beyond the size limit
])
def test_the_address_book_is_checked_before_it_is_parsed(tmp_path: Path, book: str) -> None:
    from config import contract_address

    (tmp_path / "book.json").write_text(book)
    text = _edit(GOOD, '  contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3"\n',
                 "  address_book: book.json\n")
    cfg = parse_config(text, base_dir=tmp_path)
    with pytest.raises(ConfigError) as e:
        contract_address(cfg)
    assert e.value.issues[0].path == "chain.address_book"


def test_a_good_address_book_gives_the_ledger(tmp_path: Path) -> None:
    from config import contract_address

    addr = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    book = {"chain_id": 31337, "contracts": {"EmissionsLedger": addr}}
    (tmp_path / "book.json").write_text(json.dumps(book))
    text = _edit(GOOD, f'  contract: "{addr}"\n', "  address_book: book.json\n")
    assert contract_address(parse_config(text, base_dir=tmp_path)) == addr
