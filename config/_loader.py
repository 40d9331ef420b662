"""Load a YAML config: parse, validate, and explain every problem by YAML path and line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from config._schema import DRIVER_MODELS, Config

#: Limits applied to a config before and while it is parsed (docs/configuration.md, "Limits"):
#: a config file above this size is refused unread (a 15,000-point config is about 2 MB) ...
MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: ... collections nested deeper than this are refused as the parser meets them (the deepest
#: the schema has is 8), so deep nesting never reaches Python's recursion limit ...
MAX_DEPTH = 64
#: ... and so is a document of more values than this, counting each alias as the values it
#: stands for (anchors and aliases cannot expand into a "billion laughs").
MAX_VALUES = 2_000_000
#: Problems listed at most in one `ConfigError` (then how many more there are).
MAX_ISSUES = 200


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    path: str  # e.g. "devices[0].points[2].type"; "" for the whole document
    line: int | None  # 1-based line in the YAML file
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path or '<document>'}: {self.message}"


class ConfigError(Exception):
    """The config file cannot be used. ``issues`` names each problem by YAML path and line."""

    def __init__(self, source: str, issues: Sequence[ConfigIssue]) -> None:
        self.source = source
        self.issues = list(issues)
        lines = "\n".join(f"  {i}" for i in self.issues)
        super().__init__(f"{source}: {len(self.issues)} problem(s):\n{lines}")


def _fmt_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


class _Tree:
    """The composed YAML node tree, to find the line of a path."""

    def __init__(self, node: yaml.Node | None) -> None:
        self.node = node

    def line_of(self, loc: Sequence[int | str]) -> int | None:
        node = self.node
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in loc:
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                for k, v in node.value:
                    if k.value == part:
                        child = v
                        line = k.start_mark.line + 1
                        break
            elif (isinstance(node, yaml.SequenceNode) and isinstance(part, int)
                  and 0 <= part < len(node.value)):
                child = node.value[part]
                line = child.start_mark.line + 1
            if child is None:
                return line  # the nearest existing parent
            node = child
        return line


def _allowed_keys(loc: Sequence[int | str], root: Any = None) -> list[str]:
    """Field names of the model that owns ``loc``'s parent, for 'unknown key' messages."""
    from pydantic import BaseModel

    model: Any = Config if root is None else root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if part in DRIVER_MODELS:  # the discriminator tag pydantic puts into the location
            model = DRIVER_MODELS[part]
            continue
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return []
        ann = fields[part].annotation
        model = _unwrap_model(ann)
        if model is None:
            return []
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _unwrap_model(ann: Any) -> Any:
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for a in get_args(ann):
        m = _unwrap_model(a)
        if m is not None:
            return m
    return None


def _message(err: dict[str, Any], root: Any = None) -> str:
    kind = err["type"]
    loc = err["loc"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc, root)
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown key{hint}"
    if kind == "missing":
        return "required key is missing"
    inp = err.get("input")
    got = "" if isinstance(inp, dict | list) else f", got {_shorten(_shown(inp))}"
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ")
    return f"{msg}{got}"


def _shown(value: object) -> str:
    try:
        return json.dumps(value, default=str)
    except ValueError:  # e.g. an int too long to print
        return f"<{type(value).__name__}>"


# the model names pydantic puts into the location of a plain union's members
_UNION_MEMBERS = frozenset({"Part75Substitution", "SubstitutionConfig"})


def _clean_loc(loc: Sequence[int | str]) -> list[int | str]:
    # pydantic adds the discriminator value ("modbus_tcp") into the location of union members,
    # the member's name or its validator ("function-after[_catch_all(), SubstitutionConfig]")
    return [p for p in loc if not (isinstance(p, str) and (
        p in DRIVER_MODELS or p in _UNION_MEMBERS or p.startswith("function-")))]


# libyaml's parser when PyYAML was built with it (the wheels are).
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"
_DEFAULT_COLLECTION_TAGS = (None, "!", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map")
# tags whose safe constructors build collections (on a scalar they would return a generator)
_COLLECTION_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("seq", "map", "omap", "pairs",
                                                                  "set"))


class ConfigLimitError(yaml.MarkedYAMLError):
    """A config beyond `MAX_DEPTH` or `MAX_VALUES`, refused while it is parsed."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


def _shorten(s: str, n: int = 60) -> str:
    return s if len(s) <= n else f"{s[:n]}... ({len(s):,} characters)"


_SCALAR_EV = yaml.ScalarEvent
_ALIAS_EV = yaml.AliasEvent
_SEQ_START_EV = yaml.SequenceStartEvent
_MAP_START_EV = yaml.MappingStartEvent
_SEQ_END_EV = yaml.SequenceEndEvent
_MAP_END_EV = yaml.MappingEndEvent

#: A location while the document is walked: None at the top, else (parent, key or index).
#: Built as a pair per value (cheaper than a list) and spelt out only for a message.
_Loc = tuple[Any, int | str] | None


def _loc_list(loc: _Loc) -> list[int | str]:
    out: list[int | str] = []
    while loc is not None:
        loc, part = loc
        out.append(part)
    out.reverse()
    return out


class _EventBuilder:
    """The data of a one-document YAML stream, built straight from the parser's events with
    the safe constructor's scalars, anchors, aliases and ``<<`` merge keys, noting duplicate
    keys with their lines. Unlike ``yaml.safe_load`` it never holds the whole node tree: a
    15,000-point config loads in well under a second and ~1 MB instead of ~8 s and ~100 MB
    of memory the process keeps. The node tree is composed only to place a validation error
    on its line (`_Tree`).

    The walk is the start-up's largest part at 2,000 devices (60,000 points, ~760,000
    events), so its common case is kept short: a plain scalar without an anchor is looked
    up in a cache of resolved scalars, a key's line is worked out only for a duplicate, and
    a value's location is a pair spelt out only for a message."""

    def __init__(self, text: str, *, max_depth: int = MAX_DEPTH,
                 max_values: int = MAX_VALUES) -> None:
        self.loader = _Loader(text)
        # anchor -> (value, number of values it stands for, where it was set)
        self.anchors: dict[str, tuple[Any, int, Any]] = {}
        self.duplicates: list[ConfigIssue] = []
        self.max_depth = max_depth
        self.max_values = max_values
        self.depth = 0
        self.values = 0  # values built so far, each alias counted as what it stands for
        self._scalars: dict[tuple[Any, ...], tuple[Any]] = {}

    def load(self) -> Any:
        ld = self.loader
        try:
            ld.get_event()  # stream start
            if ld.check_event(yaml.StreamEndEvent):
                return None
            first: Any = ld.get_event()  # document start (C and Python marks differ in type)
            data = self._value(ld.get_event(), None)
            ld.get_event()  # document end
            if not ld.check_event(yaml.StreamEndEvent):
                raise yaml.composer.ComposerError(
                    "expected a single document in the stream", first.start_mark,
                    "but found another document", ld.peek_event().start_mark)
            return data
        finally:
            ld.dispose()

    def _count(self, n: int, mark: Any) -> None:
        self.values += n
        if self.values > self.max_values:
            raise ConfigLimitError(
                f"more than {self.max_values:,} values (aliases counted as the values they "
                "stand for); expected a config far smaller", mark)

    def _value(self, ev: Any, loc: _Loc) -> Any:
        """The value that starts with the event ``ev`` (already taken from the parser)."""
        if type(ev) is _SCALAR_EV and ev.anchor is None:  # the common case, kept short
            self.values += 1
            if self.values > self.max_values:
                self._count(0, ev.start_mark)
            tag = ev.tag
            if tag is None or tag == "!":
                hit = self._scalars.get((ev.value, ev.implicit, ev.style, tag))
                if hit is not None:
                    return hit[0]
            return self._scalar(ev)
        if isinstance(ev, _ALIAS_EV):
            if ev.anchor not in self.anchors:
                mark: Any = ev.start_mark
                raise yaml.composer.ComposerError(None, None, f"found undefined alias {ev.anchor!r}",
                                                  mark)
            aliased, size, _ = self.anchors[ev.anchor]
            self._count(size, ev.start_mark)
            return aliased
        if ev.anchor is not None and ev.anchor in self.anchors:
            first = self.anchors[ev.anchor][2].line + 1
            raise yaml.composer.ComposerError(
                None, None, f"found duplicate anchor {ev.anchor!r} (first at line {first})",
                ev.start_mark)
        before = self.values
        self._count(1, ev.start_mark)
        value: Any
        if isinstance(ev, _SCALAR_EV):
            value = self._scalar(ev)
        elif isinstance(ev, _SEQ_START_EV | _MAP_START_EV):
            self._plain_collection(ev)
            self.depth += 1
            if self.depth > self.max_depth:
                raise ConfigLimitError(
                    f"nested more than {self.max_depth} levels deep; expected a config "
                    "far flatter", ev.start_mark)
            value = (self._sequence(loc) if isinstance(ev, _SEQ_START_EV)
                     else self._mapping(ev, loc))
            self.depth -= 1
        else:  # pragma: no cover - the parser only yields the events above here
            raise yaml.composer.ComposerError(None, None, f"unexpected {ev}", ev.start_mark)
        if ev.anchor is not None:
            self.anchors[ev.anchor] = (value, self.values - before, ev.start_mark)
        return value

    def _sequence(self, loc: _Loc) -> list[Any]:
        get = self.loader.get_event
        value_of = self._value
        out: list[Any] = []
        while True:
            ev = get()
            if type(ev) is _SEQ_END_EV:
                return out
            out.append(value_of(ev, (loc, len(out))))

    def _scalar(self, ev: Any) -> Any:
        tag = ev.tag
        if tag is None or tag == "!":  # resolved by its text: the same text, the same value
            key = (ev.value, ev.implicit, ev.style, tag)
            hit = self._scalars.get(key)
            if hit is not None:
                return hit[0]
            value = self._construct(ev, self.loader.resolve(yaml.ScalarNode, ev.value,
                                                            ev.implicit))
            if type(value) in _IMMUTABLE_SCALARS and len(self._scalars) < _SCALAR_CACHE_MAX:
                self._scalars[key] = (value,)
            return value
        return self._construct(ev, tag)

    def _construct(self, ev: Any, tag: str) -> Any:
        ld = self.loader
        if tag == _MERGE:
            return _MERGE_KEY
        if tag in _COLLECTION_TAGS:
            raise yaml.constructor.ConstructorError(
                None, None, f"the tag {tag!r} is for a collection, not for a scalar",
                ev.start_mark)
        node = yaml.ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark, ev.style)
        make = ld.yaml_constructors.get(tag) or ld.yaml_constructors[None]  # None: refuses
        try:
            return make(ld, node)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, AttributeError, OverflowError, ArithmeticError):
            # e.g. `!!timestamp x`, `!!float x`, `!!int 0x`, an int of over 4,300 digits
            short = tag.rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {_shorten(ev.value)!r} as !!{short}",
                ev.start_mark) from None

    def _plain_collection(self, ev: Any) -> None:
        if ev.tag not in _DEFAULT_COLLECTION_TAGS:
            raise yaml.constructor.ConstructorError(
                None, None, f"could not determine a constructor for the tag {ev.tag!r}",
                ev.start_mark)

    def _mapping(self, start: Any, loc: _Loc) -> dict[Any, Any]:
        get = self.loader.get_event
        value_of = self._value
        out: dict[Any, Any] = {}
        seen: dict[str, Any] = {}  # a key's text -> its mark
        merged: list[dict[Any, Any]] = []
        while True:
            kev: Any = get()
            if type(kev) is _MAP_END_EV:
                break
            key_mark = kev.start_mark
            key = value_of(kev, loc)
            name = key if type(key) is str else str(key)
            if name in seen:
                self.duplicates.append(ConfigIssue(
                    _fmt_path([*_loc_list(loc), _shorten(name)]), key_mark.line + 1,
                    f"duplicate key (first at line {seen[name].line + 1})"))
            seen[name] = key_mark
            if key is _MERGE_KEY:
                v = value_of(get(), loc)
                for m in v if isinstance(v, list) else [v]:
                    if not isinstance(m, dict):
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", start.start_mark,
                            "expected a mapping or list of mappings for merging", key_mark)
                    merged.append(m)
                continue
            if type(key) is not str:
                try:
                    hash(key)
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", start.start_mark, "found unhashable key",
                        key_mark) from None
            out[key] = value_of(get(), (loc, name))
        if not merged:
            return out
        base: dict[Any, Any] = {}
        for m in merged:  # the first merged mapping wins, explicit keys over all of them
            for k, v in m.items():
                base.setdefault(k, v)
        return {**base, **out}


#: Scalars of these types are shared between equal texts (a config of 2,000 devices repeats
#: "uint16", "kW" and small numbers some 500,000 times; each resolved and built once).
_IMMUTABLE_SCALARS = frozenset({str, int, float, bool, type(None)})
_SCALAR_CACHE_MAX = 100_000


class _MergeKey:
    def __repr__(self) -> str:
        return "<<"


_MERGE_KEY = _MergeKey()


def parse_config(text: str, *, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate YAML ``text``; relative paths are resolved against ``base_dir``."""
    cfg = parse_yaml_model(text, Config, source=source, base_dir=base_dir)
    if base_dir is not None:
        cfg = _resolve_paths(cfg, base_dir)
    return cfg


M = TypeVar("M", bound=BaseModel)


def parse_yaml_model(text: str, model: type[M], *, source: str = "<config>",
                     base_dir: Path | None = None) -> M:
    """YAML ``text`` validated as ``model``, with the limits and the messages (YAML path and
    line) of the gateway's config: for any other YAML file of the project (the portal's)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(source, [ConfigIssue("", None, _too_long("characters"))])
    builder = _EventBuilder(text)
    try:
        data = builder.load()
    except ConfigLimitError as e:
        mark = e.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(source, [ConfigIssue("", line, f"refused: {e.problem}")]) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(source, [ConfigIssue("", line, f"not valid YAML: {e.problem}")]) from None
    except yaml.YAMLError as e:
        raise ConfigError(source, [ConfigIssue("", None, f"not valid YAML: {e}")]) from None
    if builder.duplicates:
        raise ConfigError(source, builder.duplicates)
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigIssue("", 1, "expected a mapping at the top level")])
    try:
        # with a base folder (a config file), TLS files are resolved against it and read
        cfg = model.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as e:
        tree = _Tree(yaml.compose(text, Loader=_Loader))  # only now: to put errors on lines
        issues = []
        errors = e.errors()
        for err in errors[:MAX_ISSUES]:
            loc = _clean_loc(err["loc"])
            issues.append(ConfigIssue(_fmt_path(loc), tree.line_of(loc),
                                      _message(dict(err), model)))
        if len(errors) > MAX_ISSUES:
            issues.append(ConfigIssue("", None, f"... and {len(errors) - MAX_ISSUES:,} more "
                                                "problem(s) not shown"))
        raise ConfigError(source, issues) from None
    return cfg


def _resolve_paths(cfg: Config, base: Path) -> Config:
    def rel(p: Path, to: Path) -> Path:
        return p if p.is_absolute() else (to / p)

    data_dir = rel(cfg.gateway.data_dir, base)
    gateway = cfg.gateway.model_copy(update={
        "data_dir": data_dir, "signing_key": rel(cfg.gateway.signing_key, base)})
    outbox = cfg.outbox.model_copy(update={"path": rel(cfg.outbox.path, data_dir)})
    chain_upd: dict[str, Any] = {"account_key": rel(cfg.chain.account_key, base)}
    if cfg.chain.address_book is not None:
        chain_upd["address_book"] = rel(cfg.chain.address_book, base)
    chain = cfg.chain.model_copy(update=chain_upd)
    return cfg.model_copy(update={"gateway": gateway, "outbox": outbox, "chain": chain})


def _too_long(what: str) -> str:
    return (f"refused: more than {MAX_CONFIG_BYTES:,} {what}, the limit of a config file "
            "(checked before parsing)")


def load_config(path: Path | str) -> Config:
    raw, p = _read_bounded(path)
    return parse_config_bytes(raw, source=str(p), base_dir=p.resolve().parent)


def load_yaml_model(path: Path | str, model: type[M]) -> M:
    """A YAML file validated as ``model`` (size checked before parsing, then as a config)."""
    raw, p = _read_bounded(path)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(str(p), [ConfigIssue("", None, _too_long("bytes"))])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(str(p), [ConfigIssue("", None, f"not UTF-8 text: {e.reason}")]) from None
    return parse_yaml_model(text, model, source=str(p), base_dir=p.resolve().parent)


def _read_bounded(path: Path | str) -> tuple[bytes, Path]:
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)  # never more: the size is checked before parsing
    except OSError as e:
        raise ConfigError(str(p), [ConfigIssue("", None, f"cannot read: {e.strerror}")]) from None
    return raw, p


def parse_config_bytes(raw: bytes, *, source: str = "<config>",
                       base_dir: Path | None = None) -> Config:
    """`parse_config` of a config file's bytes (UTF-8), the size checked first."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(source, [ConfigIssue("", None, _too_long("bytes"))])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(source, [ConfigIssue("", None, f"not UTF-8 text: {e.reason}")]) from None
    return parse_config(text, source=source, base_dir=base_dir)


def contract_address(cfg: Config) -> str:
    """The ledger address: from ``chain.contract`` or the deployment's address book file."""
    if cfg.chain.contract is not None:
        return cfg.chain.contract
    assert cfg.chain.address_book is not None
    src = str(cfg.chain.address_book)
    # (imported here: the ledger client pulls in eth_account, which the config alone never needs)
    from ledger_client import AddressBookError, read_address_book

    try:
        book = read_address_book(cfg.chain.address_book)
    except OSError as e:
        raise ConfigError(src, [ConfigIssue("chain.address_book", None,
                                            f"cannot read: {e.strerror}")]) from None
    except AddressBookError as e:  # too large, too deep, not JSON, not an address book
        raise ConfigError(src, [ConfigIssue("chain.address_book", None, str(e))]) from None
    addr = book.get("contracts", {}).get("EmissionsLedger") if isinstance(book, dict) else None
    if not isinstance(addr, str):
        raise ConfigError(src, [ConfigIssue("contracts.EmissionsLedger", None,
                                            "address book has no EmissionsLedger address")])
    if book.get("chain_id") not in (None, cfg.chain.chain_id):
        raise ConfigError(src, [ConfigIssue(
            "chain_id", None,
            f"address book is for chain {book.get('chain_id')}, config says {cfg.chain.chain_id}")])
    return addr
