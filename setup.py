"""The optional C extensions of the hot path (docs/compiled-path.md): the record leaves and rows
(``ledger_client._leafc``) and untracking plain records from the cyclic GC (``mrv_core._untrack``).

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
            optional=True,
            extra_compile_args=[] if os.name == "nt" else ["-O3"],
        ),
        Extension(
            "mrv_core._untrack",
            sources=["mrv_core/_untrack.c"],
            optional=True,
            extra_compile_args=[] if os.name == "nt" else ["-O3"],
        ),
    ]
)
