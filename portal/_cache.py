"""Answers kept while the data they came from is unchanged.

Everything the chain tables hold changes only when the indexer applies a block range, and that
transaction moves the checkpoint: the checkpoint's block number is the *chain version*. An
answer computed from chain tables at one version is valid until the version moves, so the API
keeps roles, grants, accounts and rankings per version, and a request costs one primary-key
lookup of the checkpoint instead of the dozen queries that made the answer. Every API process
keeps its own cache; none can serve an answer older than the checkpoint it has just read."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import sqlalchemy as sa

from portal._chain_tables import idx_checkpoint

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

CHECKPOINT = "chain"  # the indexer's checkpoint row (portal/_indexer.py)


def chain_version(conn: sa.Connection) -> tuple[int, str]:
    """The chain tables' version: the indexer's checkpoint, block number and hash (the hash:
    after a reorg and ``mrv-portal index --reset`` a height can come back with other data);
    ``(-1, "")`` before the first step."""
    row = conn.execute(sa.select(idx_checkpoint.c.block_number, idx_checkpoint.c.block_hash)
                       .where(idx_checkpoint.c.name == CHECKPOINT)).first()
    return (-1, "") if row is None else (int(row[0]), str(row[1]))


class VersionedCache(Generic[K, V]):
    """A bounded (least recently used out) map from key to (version, value); a lookup at
    another version recomputes. Thread-safe; two threads missing at once may both compute."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._items: OrderedDict[K, tuple[Hashable, V]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: K, version: Hashable, compute: Callable[[], V]) -> V:
        with self._lock:
            found = self._items.get(key)
            if found is not None and found[0] == version:
                self._items.move_to_end(key)
                self.hits += 1
                return found[1]
            self.misses += 1
        value = compute()
        with self._lock:
            self._items[key] = (version, value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return value
