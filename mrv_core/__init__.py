"""The bottom layer: what every stage of the gateway shares, and nothing else.

Records and quality bits, the metrics registry, async helpers and the supervisor, SQLite
helpers, failpoints, untracking plain records from the GC and the daemon's process tuning, the
TLS context, bounded JSON, the base error type that marks an error fatal, and the base config
model. It imports no other package of the project; every other package may import it, by the
public names below only (``docs/architecture.md``).
"""

from mrv_core._aio import cancel_and_wait, raise_if_cancelling
from mrv_core._bounded import InputLimitError, check_json, json_depth, loads_bounded
from mrv_core._errors import FatalError
from mrv_core._failpoints import failpoint
from mrv_core._gc import (
    UNTRACK_COMPILED,
    block_readings,
    pause_collector,
    tune_process,
    untrack_atomic,
)
from mrv_core._metrics import ComponentState, Metrics
from mrv_core._model import StrictModel
from mrv_core._records import (
    INVALID,
    AuditRecord,
    DerivedRecord,
    Quality,
    Reading,
    Record,
    committed_reading,
    hj212_flag,
    is_valid,
    new_reading,
)
from mrv_core._sqlite import open_wal
from mrv_core._supervisor import supervise
from mrv_core._tls import TlsConfig, client_context

__all__ = [
    "INVALID",
    "UNTRACK_COMPILED",
    "AuditRecord",
    "ComponentState",
    "DerivedRecord",
    "FatalError",
    "InputLimitError",
    "Metrics",
    "Quality",
    "Reading",
    "Record",
    "StrictModel",
    "TlsConfig",
    "block_readings",
    "cancel_and_wait",
    "check_json",
    "client_context",
    "committed_reading",
    "failpoint",
    "hj212_flag",
    "is_valid",
    "json_depth",
    "loads_bounded",
    "new_reading",
    "open_wal",
    "pause_collector",
    "raise_if_cancelling",
    "supervise",
    "tune_process",
    "untrack_atomic",
]
