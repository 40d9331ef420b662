# Untracking plain records from the cyclic GC (mrv_core/_untrack.c; docs/compiled-path.md).

from typing import Any

def untrack_atomic(objects: list[Any], /) -> int: ...
