"""Small pure parts: durations, moments, the retry policy's backoff, the file destination's names."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.errors import ConfigurationError
from engine.messaging.durations import parse_duration, parse_since
from engine.messaging.file_destination import create_file_destination
from engine.messaging.logsafe import describe
from engine.messaging.retry import RetryPolicy


def test_durations_and_moments():
    assert parse_duration("500ms") == 0.5 and parse_duration("2m") == 120 and parse_duration(3) == 3.0
    assert parse_duration("7d") == 7 * 86400
    for bad in ("soon", "-1s", True, "1w"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_since("2025-01-01T10:00+02:00") == datetime(2025, 1, 1, 8, tzinfo=UTC)
    assert parse_since("2025-01-01") == datetime(2025, 1, 1, tzinfo=UTC)
    assert (datetime.now(UTC) - parse_since("1h")).total_seconds() == pytest.approx(3600, abs=5)


def test_exponential_backoff_with_jitter_and_cap():
    policy = RetryPolicy(attempts=6, initial_delay=1.0, multiplier=2.0, max_delay=10.0, jitter=0.2)
    rng = random.Random(7)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)]:
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert min(delays) >= base * 0.8 - 1e-9 and max(delays) <= base * 1.2 + 1e-9
        assert max(delays) - min(delays) > base * 0.2  # really jittered
    assert all(policy.delay(9, rng) <= 10.0 for _ in range(100))
    assert not policy.exhausted(5) and policy.exhausted(6)
    assert RetryPolicy(jitter=0).delay(3) == 4.0


def test_file_destination_names_never_come_from_the_message(tmp_path: Path):
    dest = create_file_destination(f"file://{tmp_path}/out", {"extension": "txt", "prefix": "lab-"})

    async def go():
        return await dest.send(b"MSH|^~\\&|../../etc/passwd", content_type="x-application/hl7-v2+er7")

    result = asyncio.run(go())
    [written] = list((tmp_path / "out").iterdir())
    assert result.ok and written.name.startswith("lab-") and written.suffix == ".txt"
    assert written.read_bytes().startswith(b"MSH|")
    for url, options in [
        ("file://remote-host/share", {}),
        (f"file://{tmp_path}", {"prefix": "../x"}),
        (f"file://{tmp_path}", {"extension": "h/l7"}),
    ]:
        with pytest.raises(ConfigurationError):
            create_file_destination(url, options)


def test_describe_names_the_failure_without_its_text():
    try:
        {}["PATIENT-DOE"]
    except KeyError as exc:
        text = describe(exc)
    assert text.startswith("KeyError at ") and "DOE" not in text


def test_workers_can_be_left_to_another_process(settings, database, monkeypatch):
    from engine.runtime import build_runtime

    monkeypatch.setenv("CONDUIT_MESSAGING_WORKERS", "false")
    quiet = build_runtime(settings, db=database)
    monkeypatch.setenv("CONDUIT_MESSAGING_WORKERS", "true")
    busy = build_runtime(settings, db=database)
    assert busy.port("messages").pool.run in busy.background
    assert quiet.port("messages").pool.run not in quiet.background
    assert quiet.port("inbox") is not None  # the listener still stores and acknowledges
