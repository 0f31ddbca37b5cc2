"""Throwaway TLS material for the gateway: a fresh CA and a server certificate it signed, made by
trustme (ECDSA P-256 keys, SANs for every name and address given)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["TlsMaterial"]


@dataclass(frozen=True)
class TlsMaterial:
    """PEM files of a fresh CA and of a server certificate valid for the given names."""

    ca_path: Path
    cert_path: Path
    key_path: Path

    @classmethod
    def create(cls, directory: Path, *, names: Sequence[str]) -> TlsMaterial:
        """Write ``ca.pem``, ``server.pem`` and ``server-key.pem`` (mode 0600) into ``directory``.

        Args:
            names: host names and IP addresses the server certificate carries as SANs.
        """
        authority = trustme.CA(organization_name="iampool test gateway")
        server = authority.issue_cert(*dict.fromkeys(names), common_name=names[0])
        material = cls(
            ca_path=directory / "ca.pem",
            cert_path=directory / "server.pem",
            key_path=directory / "server-key.pem",
        )
        authority.cert_pem.write_to_path(str(material.ca_path))
        material.cert_path.write_bytes(b"".join(pem.bytes() for pem in server.cert_chain_pems))
        descriptor = os.open(material.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as key_file:
            key_file.write(server.private_key_pem.bytes())
        return material

    def server_context(self) -> ssl.SSLContext:
        """The gateway's side: presents the server certificate, TLS 1.2 or later."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_path, self.key_path)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA and checks the host name (verify-full)."""
        context = ssl.create_default_context(cafile=str(self.ca_path))
        context.check_hostname = True
        return context
