"""The local chain used by the tests, the demo and the benchmarks leaves nothing on disk: anvil
otherwise writes old states to a cache directory and never removes them (tens of GB over a
test and benchmark run filled a disk)."""

from __future__ import annotations

from simulator import Anvil
from simulator._anvil import rpc


def test_many_blocks_write_no_state_to_disk_and_stop_removes_the_cache() -> None:
    with Anvil() as a:
        cache = a.cache_path
        assert cache is not None and cache.is_dir()
        rpc(a.url, "anvil_mine", ["0x400"], timeout=30)  # 1,024 blocks
        assert int(str(rpc(a.url, "eth_blockNumber")), 16) >= 1024
        assert [p for p in cache.rglob("*") if p.is_file()] == []
    assert not cache.exists()
