"""The process-wide settings `mrv-gateway run` makes once started (`mrv_core.tune_process`,
mrv_core/_gc.py): the collector's frozen start-up objects and thresholds, the GIL's switch
interval (docs/design/008-speed.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_daemon_tunes_its_own_process_only() -> None:
    """`mrv-gateway run` freezes its start-up objects, raises the collector's thresholds and
    shortens the GIL's switch interval; a program that imports the gateway keeps its own."""
    root = Path(__file__).resolve().parent.parent
    code = ("import gc, sys; import gateway._daemon as d; import mrv_core;"
            "before = (sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count());"
            "assert d.tune_process is mrv_core.tune_process;"
            "n = d.tune_process();"
            "print(before[0], before[1][0], before[2], sys.getswitchinterval(),"
            " gc.get_threshold()[0], n > 1000, n == gc.get_freeze_count())")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                       timeout=120, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["0.005", "700", "0", "0.001", "200000", "True", "True"]
