"""Why a client could not reach the cluster, in one sentence.

aiokafka reports every failed bootstrap as ``Unable to bootstrap from [...]``, whatever the
cause: a refused port, a TLS certificate the client does not trust, a plaintext client on a
TLS listener, or a rejected password. :func:`diagnose` connects once to each bootstrap
address with the same settings and names the cause, so a wrong password is one clear error.
"""

from __future__ import annotations

import asyncio
import ssl

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError

from streamer.errors import ClusterAuthenticationError, ClusterConnectionError
from streamer.settings import KafkaSettings


def _addresses(bootstrap_servers: str) -> list[tuple[str, int]]:
    addresses = []
    for item in filter(None, bootstrap_servers.split(",")):
        host, _, port = item.strip().rpartition(":")
        addresses.append((host.strip("[]") or item.strip(), int(port) if port.isdigit() else 9092))
    return addresses


def _explain(kafka: KafkaSettings, address: str, error: BaseException) -> ClusterConnectionError:
    """The error type and sentence for one failed connection."""
    if isinstance(error, (SaslAuthenticationFailed, UnsupportedSaslMechanismError)):
        return ClusterAuthenticationError(
            f"Kafka at {address} refused {kafka.sasl_mechanism} authentication as "
            f"{kafka.sasl_username!r}: check the user and STREAMER_KAFKA__SASL_PASSWORD "
            f"({error})")
    if isinstance(error, ssl.SSLCertVerificationError):
        return ClusterConnectionError(
            f"the TLS certificate of Kafka at {address} is not trusted ({error.verify_message}): "
            "point --ssl-cafile at the CA that signed it")
    if isinstance(error, ssl.SSLError):
        return ClusterConnectionError(f"TLS with Kafka at {address} failed: {error}")
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return ClusterConnectionError(
            f"Kafka at {address} did not answer in time: is --security-protocol "
            f"{kafka.security_protocol} what that listener speaks?")
    if isinstance(error, KafkaError) and kafka.security_protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        return ClusterConnectionError(
            f"Kafka at {address} closed the connection ({error}): a TLS or SASL listener "
            f"needs --security-protocol SASL_SSL (or SSL); this client speaks "
            f"{kafka.security_protocol}")
    return ClusterConnectionError(f"cannot reach Kafka at {address}: {error}")


async def diagnose(kafka: KafkaSettings, timeout: float = 15.0) -> ClusterConnectionError | None:
    """Connect once to each bootstrap address; None when one of them accepts, else the error
    that explains the first failure."""
    options = kafka.client_options()
    first: ClusterConnectionError | None = None
    for host, port in _addresses(kafka.bootstrap_servers):
        try:
            connection = await asyncio.wait_for(create_conn(
                host, port, client_id=kafka.client_id, request_timeout_ms=int(timeout * 1000),
                ssl_context=options.get("ssl_context"),
                security_protocol=kafka.security_protocol,
                sasl_mechanism=options.get("sasl_mechanism"),
                sasl_plain_username=options.get("sasl_plain_username"),
                sasl_plain_password=options.get("sasl_plain_password"),
            ), timeout)
        except (OSError, KafkaError, asyncio.TimeoutError) as error:
            first = first or _explain(kafka, f"{host}:{port}", error)
            continue
        connection.close()
        return None
    return first
