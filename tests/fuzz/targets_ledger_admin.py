"""Fuzz targets: what `mrvctl` and `ledger_client._admin` parse from outside — address books
(a JSON file handed over by the ledger's operator) and command-line values (amounts, times,
wei, hashes, addresses, unified social credit codes). Command-line text arrives as argv does:
UTF-8 with undecodable bytes kept as surrogates. The clean rejection is ValueError (mrvctl's
exit 2, "bad input"); `AddressBookError` is one."""

from __future__ import annotations

import json

from ledger_client._admin import AddressBookError, parse_address_book, validate_uscc
from ledger_client._mrvctl import parse_address, parse_amount, parse_hash, parse_time_ns, parse_wei

from . import Target


def _argv(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _address_book(data: bytes) -> None:
    book = parse_address_book(data)
    # what it accepts is usable as documented
    assert isinstance(book["contracts"], dict)


def _amount(data: bytes) -> None:
    g = parse_amount(_argv(data))
    assert 0 <= g < 2**128


def _time(data: bytes) -> None:
    ns = parse_time_ns(_argv(data))
    assert -(2**63) <= ns < 2**63


def _wei(data: bytes) -> None:
    assert 0 < parse_wei(_argv(data)) < 2**256


def _hash(data: bytes) -> None:
    assert len(parse_hash(_argv(data), "hash")) == 32


def _address(data: bytes) -> None:
    parse_address(_argv(data))


def _uscc(data: bytes) -> None:
    code = validate_uscc(_argv(data))
    assert len(code) == 18


_BOOK = json.dumps({
    "chain_id": 31337, "rpc_url": "http://127.0.0.1:8545",
    "admin": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "contracts": {"MrvRegistry": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
                  "EmissionsLedger": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
                  "Market": "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9"},
    "compiler": "0.8.37+commit.a0f3ec1c.Emscripten.clang", "evm_version": "paris"},
    indent=2).encode()

TARGETS: list[Target] = [
    Target("ledger_admin.address_book", _address_book, (AddressBookError,),
           (_BOOK, b'{"contracts": {}}', b'{"contracts": {"X": "0x' + b"0" * 40 + b'"}}'),
           oversize=(1 << 20) + 1),
    Target("mrvctl.amount", _amount, (ValueError,),
           (b"12.5t", b"300 kg", b"1500000g", b"7", b"0.000001t",
            str(2**128 - 1).encode())),
    Target("mrvctl.time", _time, (ValueError,),
           (b"2025-01-01", b"2024-01-01T08:00:00+08:00", b"1767225600000000000", b"-1",
            b"2262-04-11T23:47:16")),
    Target("mrvctl.wei", _wei, (ValueError,), (b"1", b"100000000000000000000", b"0")),
    Target("mrvctl.hash", _hash, (ValueError,), (b"0x" + b"ab" * 32, b"cd" * 32)),
    Target("mrvctl.address", _address, (ValueError,),
           (b"0x70997970C51812dc3A010C7d01b50e0d17dc79C8",)),
    Target("ledger_admin.credit_code", _uscc, (ValueError,),
           (b"91350100M000100Y43", b"914403001922038216", b"9144030071526726XG",
            b"91350100m000100y43")),
]
