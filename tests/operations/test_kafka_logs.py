"""An outage's retry noise collapses to one line, then one a minute."""

from __future__ import annotations

import logging

from streamer.operations.kafka_logs import OutageLogs


def _record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", level, __file__, 1, message, None, None)


def test_an_outage_is_one_line_then_one_a_minute():
    now = [0.0]
    outage = OutageLogs(clock=lambda: now[0])
    passed = []
    for second in range(0, 150):  # 150 s of errors, ten a second
        now[0] = float(second)
        for _ in range(10):
            record = _record("Unable connect to node with id 1: [Errno 111] Connection refused")
            if outage.filter(record):
                passed.append(record.getMessage())
    assert len(passed) == 3  # the start, then at 60 s and 120 s
    assert passed[0].startswith("Kafka unreachable") and "Connection refused" in passed[0]
    assert passed[1].startswith("Kafka still failing: 600 more errors")
    now[0] = 200.0  # quiet for more than half a minute: a new outage gets its own line
    record = _record("Failed fetch messages from 1: NodeNotReadyError")
    assert outage.filter(record) and record.getMessage().startswith("Kafka unreachable")


def test_other_messages_pass_and_startup_noise_is_debug():
    outage = OutageLogs()
    assert outage.filter(_record("worker w1: assigned partitions [0]", logging.INFO))
    assert outage.filter(_record("something unrelated went wrong"))
    record = _record("GroupCoordinatorNotAvailableError: coordinator not ready")
    outage.filter(record)
    assert record.levelno == logging.DEBUG


def test_a_refusal_is_left_to_the_command_then_one_line_a_minute():
    now = [0.0]
    outage = OutageLogs(clock=lambda: now[0])
    refusal = ('Unable connect to "127.0.0.1:9093": [Error 58] SaslAuthenticationFailed: '
               "Authentication failed during authentication due to invalid credentials")
    first = _record(refusal)
    outage.filter(first)
    assert first.levelno == logging.DEBUG  # a command at start reports it in its own words
    shown = []
    for second in range(1, 130):
        now[0] = float(second)
        record = _record(refusal)
        if outage.filter(record):
            shown.append((record.levelno, record.getMessage()))
    assert [message[:45] for _, message in shown] == \
        ["Kafka has refused the connection for 60 s (cr", "Kafka has refused the connection for 120 s (c"]
    assert all(level == logging.ERROR for level, _ in shown)


def test_scattered_not_enough_replicas_are_debug_a_burst_is_an_outage():
    now = [0.0]
    outage = OutageLogs(clock=lambda: now[0])
    line = ("Got error produce response on topic-partition TopicPartition(topic='frames.restored', "
            "partition=0), retrying. Error: <class 'aiokafka.errors.NotEnoughReplicasError'>")
    for tick in range(300):  # one every second or two, as a healthy cluster checks transactions
        now[0] = tick * 1.3
        record = _record(line, logging.WARNING)
        outage.filter(record)
        assert record.levelno == logging.DEBUG
    shown = []
    for tick in range(30):  # a real shortage: the producer retries every 100 ms
        now[0] = 400.0 + tick * 0.1
        record = _record(line, logging.WARNING)
        if outage.filter(record):
            shown.append(record.getMessage())
    assert len(shown) == 1 and shown[0].startswith("Kafka unreachable")
