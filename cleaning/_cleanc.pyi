# The compiled scalar path of `Cleaner.clean` (cleaning/_cleanc.c; docs/compiled-path.md).
from collections.abc import Set

def configure(reading_type: type, cleaner_type: type, flags: tuple[int, ...], /) -> bool: ...
def clean_scalar(
    readings: list[object], points: dict[str, object], now_ns: int, skip: Set[str] | None, /
) -> tuple[list[tuple[int, int]], list[int]] | None: ...
