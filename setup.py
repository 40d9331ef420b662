"""The optional C extension of the record-leaf hot path (docs/compiled-path.md).

Everything else about the package is in pyproject.toml. The extension is optional: without a C
compiler the install still succeeds and ledger_client runs its pure-Python path.
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
        )
    ]
)
