"""The optional C extensions of the hot path (docs/compiled-path.md): the record leaves and rows
(``ledger_client._leafc``); untracking plain records from the cyclic GC and building a Modbus
read's readings (``mrv_core._recordc``); the cleaner's checks without a window, one reading at
a time (``cleaning._cleanc``).

Everything else about the package is in pyproject.toml. The extension is optional: without a C
compiler the install still succeeds and the pure-Python path runs.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ledger_client._leafc",
            sources=["ledger_client/_leafc.c"],
            depends=["mrv_core/_slots.h"],
            optional=True,
            extra_compile_args=[] if os.name == "nt" else ["-O3"],
        ),
        Extension(
            "cleaning._cleanc",
            sources=["cleaning/_cleanc.c"],
            depends=["mrv_core/_slots.h"],
            optional=True,
            extra_compile_args=[] if os.name == "nt" else ["-O3", "-ffp-contract=off"],
        ),
        Extension(
            "mrv_core._recordc",
            sources=["mrv_core/_recordc.c"],
            depends=["mrv_core/_slots.h"],
            optional=True,
            # no fused multiply-add: v * scale + add rounds twice, as in Python
            extra_compile_args=[] if os.name == "nt" else ["-O3", "-ffp-contract=off"],
        ),
    ]
)
