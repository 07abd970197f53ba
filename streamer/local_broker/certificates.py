"""A throwaway certificate authority and broker certificate for the local broker's TLS
listener, made with the machine's ``openssl``.

Clients trust the CA file (``--ssl-cafile``); the broker presents a certificate for
127.0.0.1 and localhost signed by it. Nothing here is for production: a real cluster has
certificates from the observatory's own CA.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pydantic import BaseModel

from streamer.errors import LocalKafkaError

_BROKER_EXTENSIONS = """subjectAltName = IP:127.0.0.1, DNS:localhost
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


class LocalCertificates(BaseModel):
    """PEM files of a local CA and of a broker certificate it signed."""

    ca_file: Path
    keystore_file: Path  # the broker's PKCS#8 key followed by its certificate (Kafka PEM keystore)


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise LocalKafkaError(f"openssl {args[0]} failed: {result.stderr[-1500:]}")


def make_certificates(folder: Path, days: int = 30) -> LocalCertificates:
    """Make a CA and a broker certificate for 127.0.0.1 in ``folder`` (valid ``days`` days)."""
    if shutil.which("openssl") is None:
        raise LocalKafkaError("a TLS listener needs openssl on PATH (apt-get install openssl)")
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", str(days), "-subj", "/CN=streamer local CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key",
             "-out", "broker.csr", "-subj", "/CN=127.0.0.1", cwd=folder)
    (folder / "broker.ext").write_text(_BROKER_EXTENSIONS)
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "broker.pem", "-days", str(days),
             "-extfile", "broker.ext", cwd=folder)
    keystore = folder / "broker-keystore.pem"
    keystore.write_text((folder / "broker.key").read_text() + (folder / "broker.pem").read_text())
    keystore.chmod(0o600)
    (folder / "ca.key").unlink()  # nothing else is ever signed with it
    return LocalCertificates(ca_file=folder / "ca.pem", keystore_file=keystore)
