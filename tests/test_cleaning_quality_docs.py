"""Issue 11: docs/formats.md and docs/cleaning.md disagreed on whether SUBSTITUTED makes a value
invalid. Both now say which bits do not, and that must be what the code's `INVALID` says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mrv_core._records import INVALID, Quality, is_valid

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _not_invalid_in(doc: str) -> set[str]:
    text = " ".join((DOCS / doc).read_text().split())
    found = re.findall(r"the bits that do not make a value invalid: ((?:`\w+`(?:, )?)+)", text,
                       flags=re.IGNORECASE)
    assert len(found) == 1, f"{doc}: expected one list of the bits that keep a value valid"
    return set(re.findall(r"`(\w+)`", found[0]))


@pytest.mark.parametrize("doc", ["formats.md", "cleaning.md"])
def test_docs_name_the_bits_that_keep_a_value_valid_as_the_code_does(doc: str) -> None:
    in_code = {q.name for q in Quality if not q & INVALID}
    assert _not_invalid_in(doc) == in_code
    assert "SUBSTITUTED" in in_code and is_valid(int(Quality.SUBSTITUTED))


def test_the_formats_table_lists_every_bit() -> None:
    rows = re.findall(r"^\| (\d+) \| (\w+) \|", (DOCS / "formats.md").read_text(), flags=re.M)
    assert {(int(b), n) for b, n in rows} >= {(q.bit_length() - 1, q.name) for q in Quality}
