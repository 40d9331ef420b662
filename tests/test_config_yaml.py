"""The config loader builds its data from the YAML parser's events (no node tree in memory):
it must give exactly what ``yaml.safe_load`` gives, anchors and merge keys included, and
refuse what it refuses, with the line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from config import ConfigError, parse_config
from config._loader import MAX_DEPTH, ConfigLimitError, _EventBuilder

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "config" / "examples").glob("*.yaml"))

SAME = {
    "scalars": "a: 1\nb: 1.5\nc: -2e3\nd: 0x1F\ne: 0o17\nf: yes\ng: off\nh: ~\ni: null\n"
               "j: 'quoted 1'\nk: \"esc\\tq\"\nl: .inf\nm: 1_000\nn: 2026-01-02\n"
               "o: 2026-01-02T03:04:05Z\np: !!str 123\nq: !!float 3\nr: ''\n",
    "nested": "top:\n  list: [1, [2, 3], {x: y}]\n  map: {a: {b: {c: [d]}}}\n",
    "block-scalars": "lit: |\n  one\n  two\nfold: >\n  one\n  two\n",
    "anchor-alias": "base: &b {host: h, port: 502}\ncopy: *b\nlist: [&x 5, *x]\n",
    "merge": "defaults: &d {interval_s: 1, timeout_s: 2}\n"
             "dev:\n  <<: *d\n  timeout_s: 5\n  name: m1\n",
    "merge-list": "a: &a {k: 1, a: 1}\nb: &b {k: 2, b: 2}\nc:\n  <<: [*a, *b]\n  c: 3\n",
    "merge-first-wins": "a: &a {k: 1}\nb: &b {k: 2}\nc: {<<: [*b, *a]}\n",
    "keys-of-other-types": "1: one\ntrue: t\n~: n\n",
    # each text is resolved once and shared: the same text in another style is another value
    "repeated-scalars": "a: [1, '1', \"1\", 1, yes, 'yes', yes, 1.0, '1.0', 1.0, ~, '~', ~,"
                        " 2026-01-02, '2026-01-02', 2026-01-02, !!str 1, 1, !!float 1, 1]\n",
    "empty-values": "a:\nb: []\nc: {}\n",
    "document-markers": "---\na: 1\n...\n",
    "only-a-scalar": "just text\n",
    "empty": "",
    "comments-only": "# nothing here\n",
}


@pytest.mark.parametrize("text", list(SAME.values()), ids=list(SAME))
def test_same_data_as_safe_load(text: str) -> None:
    b = _EventBuilder(text)
    assert b.load() == yaml.safe_load(text)
    assert b.duplicates == []


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_load_as_safe_load_does(path: Path) -> None:
    text = path.read_text()
    assert _EventBuilder(text).load() == yaml.safe_load(text)


def test_duplicate_keys_are_named_with_both_lines_at_any_depth() -> None:
    b = _EventBuilder("a: 1\nb:\n  - {x: 1, y: 2}\n  - x: 1\n    x: 2\na: 3\n")
    b.load()
    assert [(i.path, i.line, i.message) for i in b.duplicates] == [
        ("b[1].x", 5, "duplicate key (first at line 4)"),
        ("a", 6, "duplicate key (first at line 1)")]


REFUSED = {
    "two-documents": ("a: 1\n---\nb: 2\n", "expected a single document", 2),
    "undefined-alias": ("a: *nope\n", "found undefined alias", 1),
    "unknown-tag": ("a: !python/object:os.system x\n", "could not determine a constructor", 1),
    "unknown-collection-tag": ("a: !plant {x: 1}\n", "could not determine a constructor", 1),
    "merge-a-scalar": ("a: {<<: 5}\n", "expected a mapping or list of mappings", 1),
    "unhashable-key": ("? [a, b]\n: 1\n", "found unhashable key", 1),
}


@pytest.mark.parametrize(("text", "fragment", "line"), list(REFUSED.values()), ids=list(REFUSED))
def test_refused_like_safe_load_with_the_line(text: str, fragment: str, line: int) -> None:
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(text)
    with pytest.raises(yaml.MarkedYAMLError) as ei:
        _EventBuilder(text).load()
    assert fragment in str(ei.value)
    with pytest.raises(ConfigError) as ce:
        parse_config(text, source="bad.yaml")
    [issue] = ce.value.issues
    assert "not valid YAML" in issue.message and issue.line == line, issue


ALIKE = """\
gateway: {id: gw1, signing_key: keys/ed25519.key}
chain: {rpc_url: "http://127.0.0.1:8545", chain_id: 31337, account_key: keys/evm.key,
        contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3"}
devices:
  - &meter
    driver: modbus_tcp
    name: meter1
    host: 10.0.0.21
    interval_s: 5
    points: [{id: m1.power, address: 2, type: float32, unit: kW}]
  - <<: *meter
    name: meter2
    host: 10.0.0.22
    points: [{id: m2.power, address: 2, type: float32, unit: kW}]
"""


def test_a_config_with_anchors_and_merge_keys_validates() -> None:
    """A plant engineer's shorthand for many alike meters."""
    cfg = parse_config(ALIKE)
    m1, m2 = cfg.devices
    assert (m2.name, m2.host, m2.interval_s, m2.driver) == ("meter2", "10.0.0.22", 5, "modbus_tcp")
    assert m1.host == "10.0.0.21"
    with pytest.raises(ConfigError) as ei:  # a mistake in the shared block: named where it is
        parse_config(ALIKE.replace("interval_s: 5", "interval_s: -5"))
    assert [(i.path, i.line) for i in ei.value.issues] == [
        ("devices[0].interval_s", 9), ("devices[1].interval_s", 11)]  # 11: its "<<: *meter"


# -- property: any data safe_dump writes, the builder reads back as safe_load does ----------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                     st.floats(allow_nan=False))
_data = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(_data, st.booleans())
def test_any_dumped_data_reads_back_as_safe_load_reads_it(data: object, flow: bool) -> None:
    text = yaml.safe_dump({"root": data}, default_flow_style=flow, allow_unicode=True)
    assert _EventBuilder(text).load() == yaml.safe_load(text)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 200), st.sampled_from(["[", "{a: "]))
def test_nesting_within_the_limit_loads_and_beyond_it_is_refused(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    text = "x: " + opener * depth + ("1" if opener != "[" else "") + closer * depth + "\n"
    if depth + 1 <= MAX_DEPTH:  # the top-level mapping is a level too
        assert _EventBuilder(text).load() == yaml.safe_load(text)
    else:
        with pytest.raises(ConfigLimitError, match="nested more than"):
            _EventBuilder(text).load()
