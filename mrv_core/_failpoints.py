"""Named crash points for the crash-safety tests (after the idea of FreeBSD/TiKV failpoints).

``MRV_FAILPOINTS="uplink.after_send=3"`` makes the process kill itself with SIGKILL the 3rd time
it passes ``failpoint("uplink.after_send")``. Unset (production), `failpoint` is one dict lookup.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def _parse(spec: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, n = item.partition("=")
        out[name] = int(n or "1")
    return out


_armed = _parse(os.environ.get("MRV_FAILPOINTS", ""))


def failpoint(name: str) -> None:
    if not _armed or name not in _armed:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= _armed[name]:
        os.kill(os.getpid(), signal.SIGKILL)
