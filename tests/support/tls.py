"""A throw-away certificate authority for the tests that run servers with TLS."""

from __future__ import annotations

from pathlib import Path

import trustme


def loopback_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A fresh CA and a certificate for 127.0.0.1 / localhost, written as PEM files: (ca, cert, key)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return ca_file, cert_file, key_file
