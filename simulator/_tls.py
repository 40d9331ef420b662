"""A throwaway certificate authority for TLS tests and demos: a CA, a broker certificate for
the loopback address, and a client certificate, written as PEM files (trustme)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SimPki:
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def create(cls, folder: Path, client_name: str = "mrv-gateway") -> SimPki:
        import trustme  # a dev dependency: only the tests and demos make certificates

        folder.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert(client_name)
        pki = cls(folder / "ca.pem", folder / "server.pem", folder / "server.key",
                  folder / "client.pem", folder / "client.key")
        ca.cert_pem.write_to_path(str(pki.ca_file))
        server.cert_chain_pems[0].write_to_path(str(pki.server_cert))
        server.private_key_pem.write_to_path(str(pki.server_key))
        client.cert_chain_pems[0].write_to_path(str(pki.client_cert))
        client.private_key_pem.write_to_path(str(pki.client_key))
        return pki
