"""The work of one target's child process (``python -m tests.fuzz``).

It lives outside ``__main__``: a "spawn" child cannot import a package's ``__main__`` module
(multiprocessing skips re-importing ``*.__main__``), so a function defined there cannot be
unpickled in the child ("Can't get attribute '_one' on <module '__main__'>").
"""

from __future__ import annotations

import multiprocessing as mp

from tests.fuzz import all_targets, run_target


def run_one(name: str, inputs: int, seed: int, q: mp.Queue[dict[str, object]]) -> None:
    t = next(t for t in all_targets() if t.name == name)
    r = run_target(t, inputs, seed)
    q.put({"target": r.target, "inputs": r.inputs, "accepted": r.accepted, "rejected": r.rejected,
           "seconds": round(r.seconds, 1), "findings": [str(f) for f in r.findings]})
