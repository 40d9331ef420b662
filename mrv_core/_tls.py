"""TLS to an MQTT broker: the config block (``tls:`` under an MQTT device or
``control.broker``) and the client context built from it.

The broker is always verified (its certificate chain against ``ca_file``, or the system's trust
store without one, and its name against the configured host): there is no switch to turn
verification off. ``cert_file`` and ``key_file`` give a client certificate for brokers that
require one (mutual TLS).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator


class TlsConfig(BaseModel):
    """``tls: {ca_file, cert_file, key_file}``; every key optional (``tls: {}`` is TLS with
    the system's trust store). Relative paths are resolved against the config file's folder,
    and a config loaded from a file has its files read and checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file come together (a client certificate and "
                             "its private key), or neither")
        base = (info.context or {}).get("base_dir")
        if base is None:  # validating text alone: paths stay as written, files unread
            return self
        upd = {name: Path(base) / p for name in ("ca_file", "cert_file", "key_file")
               if (p := getattr(self, name)) is not None and not p.is_absolute()}
        tls = self.model_copy(update=upd) if upd else self
        for name in ("ca_file", "cert_file", "key_file"):
            p = getattr(tls, name)
            if p is not None:
                try:
                    p.read_bytes()
                except OSError as e:
                    raise ValueError(f"{name}: cannot read {p}: {e.strerror}") from None
        try:
            client_context(tls)
        except ssl.SSLError as e:
            raise ValueError(f"not a usable certificate or key: {e.reason or e}") from None
        return tls


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails. paho-mqtt 2.x (under aiomqtt) wraps the socket
    and calls ``do_handshake()`` without closing it on failure, so every refused connection
    (a broker we do not trust, a missing client certificate) left an open socket behind
    until the garbage collector found it."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def client_context(tls: TlsConfig) -> ssl.SSLContext:
    """A client context: TLS 1.2 or later, the broker's chain and host name verified."""
    ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    ctx.sslsocket_class = _ClosingSSLSocket
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    return ctx
