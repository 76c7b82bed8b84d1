"""Throwaway certificates for TLS tests, made with the ``openssl`` command line tool.

EC P-256 keys (fast to make), two days of validity, ``localhost`` and ``127.0.0.1`` as the
server names. Without openssl a test is skipped locally and fails under ``CI=true``.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import missing

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_SERVER_NAMES = "subjectAltName=DNS:localhost,IP:127.0.0.1"


@dataclass(frozen=True, slots=True)
class Pem:
    """A certificate and its private key, as files."""

    cert_file: Path
    key_file: Path

    @property
    def cert(self) -> bytes:
        return self.cert_file.read_bytes()

    @property
    def key(self) -> bytes:
        return self.key_file.read_bytes()


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        missing("the openssl binary")
    assert openssl is not None
    subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30)


def certificate_authority(directory: Path, name: str = "dockwatch test CA") -> Pem:
    """A self-signed CA certificate that can sign others (:func:`issue`)."""
    directory.mkdir(parents=True, exist_ok=True)
    pem = Pem(directory / "ca.pem", directory / "ca.key")
    _openssl(
        "req", "-x509", *_EC, "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(pem.key_file), "-out", str(pem.cert_file),
    )  # fmt: skip
    return pem


def self_signed_server(directory: Path) -> Pem:
    """A self-signed server certificate for localhost / 127.0.0.1 (its own trust root)."""
    directory.mkdir(parents=True, exist_ok=True)
    pem = Pem(directory / "server.pem", directory / "server.key")
    _openssl(
        "req", "-x509", *_EC, "-days", "2", "-subj", "/CN=localhost", "-addext", _SERVER_NAMES,
        "-keyout", str(pem.key_file), "-out", str(pem.cert_file),
    )  # fmt: skip
    return pem


def issue(ca: Pem, directory: Path, name: str, *, server: bool) -> Pem:
    """A certificate for ``name`` signed by ``ca``: a server (localhost) or a client one."""
    directory.mkdir(parents=True, exist_ok=True)
    pem = Pem(directory / f"{name}.pem", directory / f"{name}.key")
    request = directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    usage = (
        f"extendedKeyUsage=serverAuth\n{_SERVER_NAMES}\n"
        if server
        else ("extendedKeyUsage=clientAuth\n")
    )
    extensions.write_text("basicConstraints=CA:FALSE\n" + usage, encoding="ascii")
    _openssl(
        "req", "-new", *_EC, "-subj", f"/CN={name}",
        "-keyout", str(pem.key_file), "-out", str(request),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca.cert_file), "-CAkey", str(ca.key_file),
        "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(pem.cert_file),
    )  # fmt: skip
    return pem
