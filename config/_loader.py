"""Load a YAML config: parse, validate, and explain every problem by YAML path and line."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from config._schema import DRIVER_MODELS, Config


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

    def duplicate_keys(self) -> Iterator[ConfigIssue]:
        def walk(node: yaml.Node, loc: list[int | str]) -> Iterator[ConfigIssue]:
            if isinstance(node, yaml.MappingNode):
                seen: dict[str, int] = {}
                for k, v in node.value:
                    key = str(k.value)
                    if key in seen:
                        yield ConfigIssue(_fmt_path([*loc, key]), k.start_mark.line + 1,
                                          f"duplicate key (first at line {seen[key]})")
                    seen[key] = k.start_mark.line + 1
                    yield from walk(v, [*loc, key])
            elif isinstance(node, yaml.SequenceNode):
                for i, v in enumerate(node.value):
                    yield from walk(v, [*loc, i])

        if self.node is not None:
            yield from walk(self.node, [])


def _allowed_keys(loc: Sequence[int | str]) -> list[str]:
    """Field names of the model that owns ``loc``'s parent, for 'unknown key' messages."""
    from pydantic import BaseModel

    model: Any = Config
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


def _message(err: dict[str, Any]) -> str:
    kind = err["type"]
    loc = err["loc"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc)
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown key{hint}"
    if kind == "missing":
        return "required key is missing"
    inp = err.get("input")
    got = "" if isinstance(inp, dict | list) else f", got {json.dumps(inp, default=str)}"
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ")
    return f"{msg}{got}"


def _clean_loc(loc: Sequence[int | str]) -> list[int | str]:
    # pydantic adds the discriminator value ("modbus_tcp") into the location of union members.
    return [p for p in loc if not (isinstance(p, str) and p in DRIVER_MODELS)]


def parse_config(text: str, *, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate YAML ``text``; relative paths are resolved against ``base_dir``."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(source, [ConfigIssue("", line, f"not valid YAML: {e.problem}")]) from None
    except yaml.YAMLError as e:
        raise ConfigError(source, [ConfigIssue("", None, f"not valid YAML: {e}")]) from None
    tree = _Tree(node)
    dups = list(tree.duplicate_keys())
    if dups:
        raise ConfigError(source, dups)
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigIssue("", 1, "expected a mapping at the top level")])
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        issues = []
        for err in e.errors():
            loc = _clean_loc(err["loc"])
            issues.append(ConfigIssue(_fmt_path(loc), tree.line_of(loc), _message(dict(err))))
        raise ConfigError(source, issues) from None
    if base_dir is not None:
        cfg = _resolve_paths(cfg, base_dir)
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


def load_config(path: Path | str) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(p), [ConfigIssue("", None, f"cannot read: {e.strerror}")]) from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(p), [ConfigIssue("", None, f"not UTF-8 text: {e.reason}")]) from None
    return parse_config(text, source=str(p), base_dir=p.resolve().parent)


def contract_address(cfg: Config) -> str:
    """The ledger address: from ``chain.contract`` or the deployment's address book file."""
    if cfg.chain.contract is not None:
        return cfg.chain.contract
    assert cfg.chain.address_book is not None
    src = str(cfg.chain.address_book)
    try:
        book = json.loads(cfg.chain.address_book.read_text())
    except OSError as e:
        raise ConfigError(src, [ConfigIssue("chain.address_book", None,
                                            f"cannot read: {e.strerror}")]) from None
    except json.JSONDecodeError as e:
        raise ConfigError(src, [ConfigIssue("", e.lineno, f"not JSON: {e.msg}")]) from None
    addr = book.get("contracts", {}).get("EmissionsLedger") if isinstance(book, dict) else None
    if not isinstance(addr, str):
        raise ConfigError(src, [ConfigIssue("contracts.EmissionsLedger", None,
                                            "address book has no EmissionsLedger address")])
    if book.get("chain_id") not in (None, cfg.chain.chain_id):
        raise ConfigError(src, [ConfigIssue(
            "chain_id", None,
            f"address book is for chain {book.get('chain_id')}, config says {cfg.chain.chain_id}")])
    return addr
