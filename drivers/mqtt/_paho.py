"""The one reach into aiomqtt's internals, in one place.

aiomqtt 2.5 has no API for acknowledging a QoS 1 message after it is committed (it acknowledges
on arrival); the paho-mqtt client it wraps does (``Client.manual_ack_set`` / ``Client.ack``,
both public paho API). aiomqtt keeps that client in the private attribute ``_client``. This
module is the only code that reads it; it checks what it gets, so an aiomqtt upgrade that
renames or replaces the attribute raises `PahoClientUnavailable` at connect time, with a
message naming this file, instead of an AttributeError deep in the acknowledgement path.
tests/test_third_party_api.py fails on such an upgrade.
"""

from __future__ import annotations

import aiomqtt
import paho.mqtt.client as paho


class PahoClientUnavailable(RuntimeError):
    """The installed aiomqtt no longer holds a paho-mqtt client where this module looks."""


def paho_client(client: aiomqtt.Client) -> paho.Client:
    """The paho-mqtt client inside ``client`` (for manual acknowledgement only)."""
    inner = getattr(client, "_client", None)
    if not isinstance(inner, paho.Client):
        raise PahoClientUnavailable(
            f"aiomqtt.Client no longer exposes its paho-mqtt client as `_client` (got "
            f"{type(inner).__name__}); manual acknowledgement after commit needs it: adapt "
            "drivers/mqtt/_paho.py to the installed aiomqtt")
    return inner
