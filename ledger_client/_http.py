"""The JSON-RPC transport of `EvmChain`: HTTP/1.1 POSTs over one keep-alive connection, with
the standard library's ``http.client`` in a worker thread.

The gateway sends a few requests a second to its node (a batch anchored: gas estimate, nonce,
the raw transaction, its receipt), so a thread hop per request costs nothing that matters, and
``http.client`` (about 1 MB, imported with the interpreter's own modules) stands in for an
asynchronous HTTP client library of about 9 MB in the daemon's memory.

Every answer is untrusted input: at most ``max_bytes`` of it is read (one byte more tells that it
is larger), the whole request must end within ``timeout_s`` (a node that trickles bytes is cut
off at that deadline), and any failure closes the connection, so the next request starts clean.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
import urllib.parse

#: A keep-alive connection idle longer than this is not reused (a node may have closed it; a
#: POST is then never sent on a connection the server is closing).
IDLE_REUSE_S = 2.0


class HttpTransportError(Exception):
    """The request failed: no connection, a timeout, a broken or oversized answer."""


class JsonRpcHttp:
    """POSTs to one URL, one request at a time (a lock), from worker threads."""

    def __init__(self, url: str, *, timeout_s: float, max_bytes: int,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.ssl_context = ssl_context
        self._conn: http.client.HTTPConnection | None = None
        self._used = 0.0
        self._lock = threading.Lock()

    def _connect(self) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s,
                                               context=self.ssl_context)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def post(self, body: bytes) -> tuple[int, str, bytes]:
        """``(status, reason, answer body)``; raises `HttpTransportError`. Blocking: call it
        from a worker thread (``asyncio.to_thread``)."""
        deadline = time.monotonic() + self.timeout_s
        with self._lock:
            if self._conn is not None and time.monotonic() - self._used > IDLE_REUSE_S:
                self._drop()
            conn = self._conn = self._conn or self._connect()
            try:
                conn.request("POST", self.path, body, {"Content-Type": "application/json",
                                                       "Accept": "application/json"})
                resp = conn.getresponse()
                data = bytearray()
                while len(data) <= self.max_bytes:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"no whole answer within {self.timeout_s} s")
                    if conn.sock is not None:
                        conn.sock.settimeout(left)
                    chunk = resp.read1(min(1 << 16, self.max_bytes + 1 - len(data)))
                    if not chunk:
                        break
                    data += chunk
                if len(data) > self.max_bytes:
                    raise HttpTransportError(f"the answer is larger than {self.max_bytes} bytes")
                if resp.read():  # (nothing is left: this marks the answer as read, so the
                    raise HttpTransportError("the answer goes on after its end")  # conn is reused)
                if resp.will_close:
                    self._drop()
                else:
                    self._used = time.monotonic()
                return resp.status, resp.reason, bytes(data)
            except HttpTransportError:
                self._drop()
                raise
            except (OSError, http.client.HTTPException, ValueError) as e:
                # (TimeoutError and ssl.SSLError are OSErrors; ValueError: a malformed chunk)
                self._drop()
                raise HttpTransportError(f"{type(e).__name__}: {e}") from e

    def close(self) -> None:
        with self._lock:
            self._drop()
