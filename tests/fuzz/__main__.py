"""``python -m tests.fuzz [--inputs N] [--target NAME ...] [--seed S] [--json FILE]``.

Runs each target in a process of its own, so a crash of the interpreter (stack overflow,
segfault) is a finding for that target instead of the end of the campaign.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
from pathlib import Path

from tests.fuzz import Result, all_targets
from tests.fuzz._child import run_one as _one


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    ap.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target")
    ap.add_argument("--target", action="append", help="only these targets (repeatable)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the results here too")
    a = ap.parse_args(argv)
    targets = [t for t in all_targets() if not a.target or t.name in a.target]
    if not targets:
        print("no such target; known: " + ", ".join(t.name for t in all_targets()), file=sys.stderr)
        return 2
    ctx = mp.get_context("spawn")
    rows: list[dict[str, object]] = []
    print(f"{'target':<34} {'inputs':>10} {'accepted':>10} {'rejected':>10} {'s':>7}  findings")
    for t in targets:
        q: mp.Queue[dict[str, object]] = ctx.Queue()
        p = ctx.Process(target=_one, args=(t.name, a.inputs, a.seed, q))
        p.start()
        p.join()
        if p.exitcode == 0 and not q.empty():
            row = q.get()
        else:
            row = {"target": t.name, "inputs": None, "accepted": None, "rejected": None,
                   "seconds": None, "findings": [f"process died with exit code {p.exitcode}"]}
        rows.append(row)
        findings = row["findings"]
        assert isinstance(findings, list)
        print(f"{t.name:<34} {row['inputs']!s:>10} {row['accepted']!s:>10} {row['rejected']!s:>10}"
              f" {row['seconds']!s:>7}  {len(findings)}", flush=True)
        for f in findings:
            print("    " + str(f).replace("\n", "\n    "))
    if a.json:
        a.json.write_text(json.dumps({"seed": a.seed, "inputs_per_target": a.inputs,
                                      "targets": rows}, indent=2) + "\n")
    return 1 if any(r["findings"] for r in rows) else 0


if __name__ == "__main__":
    _ = Result  # re-exported for callers that import from here
    sys.exit(main())
