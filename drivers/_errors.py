"""Errors of the acquisition drivers."""

from __future__ import annotations


class DriverError(Exception):
    """Base of every driver error."""


class DeviceUnreachable(DriverError):
    """No usable answer from a device: connection refused or lost, timeout."""

    def __init__(self, device: str, reason: str) -> None:
        self.device = device
        self.reason = reason
        super().__init__(f"device {device} unreachable: {reason}")


class LinkDown(DeviceUnreachable):
    """The transport itself failed (serial port gone, TCP connection lost or refused): the
    caller closes it and opens it again on the next attempt."""
