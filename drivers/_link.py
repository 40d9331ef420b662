"""One Modbus connection per device, shared by acquisition and control.

A `ModbusLink` is one Modbus client (`LeanTcpClient` for TCP, pymodbus's serial client for
RTU) and the lock that serialises every exchange on it. The acquisition poller holds the lock
for a whole poll (every read request of its plan), and the control service holds it for one
write or read, so a control write never lands between the reads of one poll, and on an RS-485
line only one frame is ever in flight.

`ModbusLinks` hands out one link per connection key: ``tcp:<host>:<port>`` for Modbus TCP (the
host as written in the config: ``localhost`` and ``127.0.0.1`` are two keys) and
``serial:<port>`` for a serial line. The first user creates the client with its own settings
(timeout, retries); the gateway builds the acquisition pollers first, so a device that is both
polled and written uses the acquisition settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class ModbusClient(Protocol):
    """What a link needs of its client: pymodbus's async clients and `LeanTcpClient`."""

    @property
    def connected(self) -> bool: ...

    async def connect(self) -> bool: ...

    def close(self) -> None: ...


C = TypeVar("C", bound=ModbusClient)


class ModbusLink(Generic[C]):
    """One client and its lock. Hold ``lock`` around every exchange (connect, request)."""

    def __init__(self, key: str, make_client: Callable[[], C]) -> None:
        self.key = key
        self.lock = asyncio.Lock()
        self.users = 0
        self._make = make_client
        self._client: C | None = None

    @property
    def client(self) -> C:
        """The client, made at first use (pymodbus needs the running event loop)."""
        if self._client is None:
            self._client = self._make()
        return self._client

    def release(self) -> None:
        """One user is done with the link; the last one closes the connection."""
        self.users = max(0, self.users - 1)
        if self.users == 0 and self._client is not None:
            self._client.close()


class ModbusLinks:
    """The links of one gateway, by connection key."""

    def __init__(self) -> None:
        self._links: dict[str, ModbusLink[ModbusClient]] = {}

    @staticmethod
    def tcp_key(host: str, port: int) -> str:
        return f"tcp:{host}:{port}"

    @staticmethod
    def serial_key(port: str) -> str:
        return f"serial:{port}"

    def get(self, key: str, make_client: Callable[[], C]) -> ModbusLink[C]:
        """The link for ``key``; its client is made with the first user's ``make_client``."""
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = ModbusLink(key, make_client)
        link.users += 1
        return link  # type: ignore[return-value]

    def find(self, key: str) -> ModbusLink[ModbusClient] | None:
        return self._links.get(key)

    def __len__(self) -> int:
        return len(self._links)


def own_links(links: ModbusLinks | None) -> ModbusLinks:
    """``links``, or links of one's own (no sharing) when None."""
    return links if links is not None else ModbusLinks()
