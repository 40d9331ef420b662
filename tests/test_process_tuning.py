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


def test_the_collector_is_paused_over_start_up_and_on_again_once_started() -> None:
    """`pause_collector` turns the cyclic collector off for `mrv-gateway run`'s start-up;
    `tune_process` (the daemon, once started) turns it on again."""
    root = Path(__file__).resolve().parent.parent
    code = ("import gc, mrv_core;"
            "a = gc.isenabled(); mrv_core.pause_collector(); b = gc.isenabled();"
            "mrv_core.tune_process(); print(a, b, gc.isenabled())")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                       timeout=120, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["True", "False", "True"]


def test_a_start_up_that_fails_leaves_the_collector_on(tmp_path: Path) -> None:
    """`run` with a config it refuses returns its exit code with the collector on again (a
    program that calls `main` goes on with its own)."""
    import gc

    from gateway._cli import EXIT_INPUT, main

    bad = tmp_path / "gateway.yaml"
    bad.write_text("gateway: [\n")
    assert gc.isenabled()
    assert main(["run", str(bad)]) == EXIT_INPUT
    assert gc.isenabled()
