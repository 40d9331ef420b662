"""Imports third-party code whose import has process-wide side effects, and undoes them.

Every import of ours that reaches web3 / eth_account / eth_abi goes through the
``ledger_client`` package (importing ``ledger_client._x`` runs its ``__init__`` first, and
that imports this module before anything else), so this is the one place to import py_ecc.

py_ecc raises the process recursion limit to 100,000 when it is imported
(``sys.setrecursionlimit(max(100000, ...))`` in its ``__init__``). With that limit a deeply
nested input -- 65,536 ``[`` in one MQTT message -- overflows the C stack of the JSON parser
and kills the process with SIGSEGV instead of raising RecursionError. We use none of py_ecc's
recursive code (pairings), so it is imported here once and the interpreter's limit is put
back: no dependency raises the recursion limit for the whole process.
"""

from __future__ import annotations

import sys

_limit = sys.getrecursionlimit()
try:
    import py_ecc  # noqa: F401  (imported for its side effect, undone just below)
except ImportError:  # a web3 without it: nothing to undo
    pass
finally:
    sys.setrecursionlimit(_limit)
del _limit
