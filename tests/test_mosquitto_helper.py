"""The tests' Mosquitto helper (`simulator.Mosquitto`): a restart keeps the broker's folder (its
persisted sessions), closing it removes the folder."""

from __future__ import annotations

import socket

from simulator import Mosquitto


def _listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_restart_keeps_the_folder_and_close_removes_it() -> None:
    m = Mosquitto().start()
    folder = m.dir
    try:
        assert _listens(m.port) and (folder / "mosquitto.conf").is_file()
        m.restart()
        assert _listens(m.port) and folder.is_dir()
        m.stop()
        assert m.proc is None and folder.is_dir()  # kept for a restart
    finally:
        m.close()
    assert not folder.exists() and m.proc is None
    m.close()  # closing again does nothing


def test_the_context_manager_closes() -> None:
    with Mosquitto() as m:
        folder = m.dir
        assert _listens(m.port)
    assert not folder.exists() and m.proc is None
