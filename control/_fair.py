"""A bounded queue per key, served round-robin: one issuer sending many commands cannot
starve another (``docs/control.md`` "Floods")."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    """At most ``per_key`` items waiting per key; `get` takes one item from each key with
    items in turn (round-robin), in arrival order within a key."""

    def __init__(self, per_key: int) -> None:
        if per_key < 1:
            raise ValueError("per_key must be >= 1")
        self.per_key = per_key
        self._queues: dict[str, deque[T]] = {}
        self._turn: deque[str] = deque()  # keys with items, next to serve first
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def waiting(self, key: str) -> int:
        q = self._queues.get(key)
        return 0 if q is None else len(q)

    def put_nowait(self, key: str, item: T) -> bool:
        """Queue ``item`` under ``key``; False (nothing queued) when that key's queue is full."""
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = deque()
            self._turn.append(key)
        elif len(q) >= self.per_key:
            return False
        q.append(item)
        self._ready.set()
        return True

    def get_nowait(self) -> T:
        """The next item in round-robin order; IndexError when empty."""
        key = self._turn.popleft()
        q = self._queues[key]
        item = q.popleft()
        if q:
            self._turn.append(key)
        else:
            del self._queues[key]
        return item

    async def get(self) -> T:
        while not self._turn:
            self._ready.clear()
            await self._ready.wait()
        return self.get_nowait()
