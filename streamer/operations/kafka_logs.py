"""One log line per broker outage, not thousands.

While a broker is away, aiokafka logs every failed connection, fetch, heartbeat and produce
retry — an 18 s outage wrote 2,334 ERROR lines. :class:`OutageLogs` lets the first of them
through, marked as the start of an outage, then one summary a minute while it lasts; a quiet
half-minute ends the outage, and the next failure starts a new one. A fresh cluster's
"coordinator not available" while it creates its internal topics is shown at DEBUG only.

A refusal (wrong password, untrusted certificate) is not an outage: the command that meets it
at start says so itself in one line (:mod:`streamer.streaming.cluster_check`), so the first
refusal is DEBUG; if refusals go on for a minute (credentials changed under a running
process), one ERROR line a minute says so.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Callable

OUTAGE_MARKERS = ("Unable connect", "Unable to connect", "Connection", "connection",
                  "connect to node", "NodeNotReady", "KafkaConnectionError", "Failed fetch",
                  "Heartbeat", "heartbeat", "Unable to update metadata", "NotLeader",
                  "NotEnoughReplicas", "Got error produce response", "timed out",
                  "Timeout", "Error sending", "coordinator", "Coordinator",
                  "UnknownMemberId", "RebalanceInProgress", "CommitFailed")
STARTUP_MARKERS = ("GroupCoordinatorNotAvailableError", "CoordinatorNotAvailableError")
# Since Kafka 3.6 a partition leader checks each transactional produce with the coordinator
# (KIP-890); while the previous transaction's markers are still being written it answers
# clients of aiokafka's protocol version with a retriable NOT_ENOUGH_REPLICAS. At a frame a
# second that is a dozen a minute on a healthy cluster, each retried once: DEBUG, and they
# never start or prolong an outage. A real ISR shortage retries every 100 ms: TRANSIENT_BURST
# of them within TRANSIENT_SECONDS is an outage.
TRANSIENT_MARKERS = ("NotEnoughReplicas", "ConcurrentTransactions")
TRANSIENT_SECONDS = 10.0
TRANSIENT_BURST = 20
REFUSAL_MARKERS = ("SaslAuthenticationFailed", "UnsupportedSaslMechanism",
                   "CERTIFICATE_VERIFY_FAILED", "SSLCertVerificationError")
QUIET_SECONDS = 30.0
SUMMARY_SECONDS = 60.0


class OutageLogs(logging.Filter):
    """Collapses aiokafka's retry noise into outage lines (see the module notes)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._last_failure: float | None = None
        self._last_line = 0.0
        self._suppressed = 0
        self._transients: collections.deque[float] = collections.deque(maxlen=TRANSIENT_BURST)
        self._refused_since: float | None = None
        self._last_refusal = self._last_refusal_line = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(marker in message for marker in STARTUP_MARKERS):
            return _demote(record)
        if any(marker in message for marker in REFUSAL_MARKERS):
            return self._refusal(record, message)
        if record.levelno < logging.WARNING or not any(m in message for m in OUTAGE_MARKERS):
            return True
        now = self._clock()
        if any(marker in message for marker in TRANSIENT_MARKERS):
            self._transients.append(now)
            burst = (len(self._transients) == TRANSIENT_BURST
                     and now - self._transients[0] <= TRANSIENT_SECONDS)
            if not burst:
                return _demote(record)
        new_outage = self._last_failure is None or now - self._last_failure > QUIET_SECONDS
        self._last_failure = now
        if new_outage:
            self._suppressed, self._last_line = 0, now
            record.msg, record.args = ("Kafka unreachable or failing, retrying (one line a "
                                       "minute until it recovers): %s", (message[:300],))
            return True
        if now - self._last_line >= SUMMARY_SECONDS:
            count, self._suppressed, self._last_line = self._suppressed, 0, now
            record.msg, record.args = ("Kafka still failing: %d more errors in the last minute; "
                                       "latest: %s", (count + 1, message[:300]))
            return True
        self._suppressed += 1
        return False


    def _refusal(self, record: logging.LogRecord, message: str) -> bool:
        now = self._clock()
        if self._refused_since is None or now - self._last_refusal > QUIET_SECONDS:
            self._refused_since = self._last_refusal_line = now
        self._last_refusal = now
        if now - self._last_refusal_line < SUMMARY_SECONDS:
            return _demote(record)
        self._last_refusal_line = now
        record.levelno, record.levelname = logging.ERROR, "ERROR"
        record.msg, record.args = ("Kafka has refused the connection for %.0f s (credentials or "
                                   "TLS certificate): %s", (now - self._refused_since,
                                                            message[:300]))
        return True


def _demote(record: logging.LogRecord) -> bool:
    """Show ``record`` at DEBUG only."""
    record.levelno, record.levelname = logging.DEBUG, "DEBUG"
    return logging.getLogger().isEnabledFor(logging.DEBUG)


def quiet_kafka_logs() -> OutageLogs:
    """Install one :class:`OutageLogs` on aiokafka's loggers (shared: one outage, one line)."""
    outage = OutageLogs()
    for name in ("aiokafka", "aiokafka.consumer.group_coordinator", "aiokafka.consumer.fetcher",
                 "aiokafka.producer.sender", "aiokafka.conn", "aiokafka.cluster",
                 "aiokafka.client", "aiokafka.consumer.consumer", "aiokafka.producer.producer"):
        logging.getLogger(name).addFilter(outage)
    return outage
