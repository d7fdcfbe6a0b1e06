"""`maild stats`: counts, first-response median and p90, SLA compliance and CSAT."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from clockkit import build_config, create_at, maild, mapping, msk, update, write_toml

from maild.ops.stats import desk_stats, percentile
from maild.store.db import Database

MONDAY_9 = msk(2026, 11, 23, 9, 0)


@pytest.mark.parametrize(
    ("values", "share", "expected"),
    [
        ([], 0.5, None),
        ([3.0], 0.9, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([5.0, 1.0, 3.0], 0.5, 3.0),
        ([float(v) for v in range(1, 11)], 0.9, 9.0),
        ([float(v) for v in range(1, 12)], 0.9, 10.0),
    ],
)
def test_percentile_nearest_rank(values: list[float], share: float, expected: float) -> None:
    assert percentile(values, share) == expected


def _desk(db: Database, tmp_path: Path, db_url: str) -> None:
    """Five requests: two answered in time, one late, one overdue, one new and not yet due."""
    config = build_config(db_url, tmp_path)
    numbers = [create_at(db, config, MONDAY_9) for _ in range(4)]
    numbers.append(create_at(db, config, MONDAY_9 + timedelta(days=2)))
    update(db, numbers[0], first_response_at=MONDAY_9 + timedelta(hours=1), status="solved")
    update(db, numbers[0], rating="good")
    update(db, numbers[1], first_response_at=MONDAY_9 + timedelta(hours=2), type="problem")
    update(db, numbers[1], status="closed", rating="good", priority="high")
    update(db, numbers[2], first_response_at=MONDAY_9 + timedelta(hours=7), status="pending")
    update(db, numbers[2], rating="bad", priority="urgent")
    update(db, numbers[3], status="open", type="incident")


def test_stats_figures(db: Database, tmp_path: Path, db_url: str) -> None:
    _desk(db, tmp_path, db_url)
    config = build_config(db_url, tmp_path)
    with db.session() as s:
        data = desk_stats(s, config.hours, MONDAY_9 + timedelta(days=2, hours=1))
    assert data["requests"] == 5
    assert data["by_status"] == {"closed": 1, "new": 1, "open": 1, "pending": 1, "solved": 1}
    assert data["by_type"] == {"incident": 1, "problem": 1, "question": 3}
    assert data["by_priority"] == {"high": 1, "normal": 3, "urgent": 1}
    fr = data["first_response"]
    assert fr["count"] == 3 and fr["median_hours"] == 2.0 and fr["p90_hours"] == 7.0
    assert fr["median_business_hours"] == 2.0
    # Met: answered within 4 working hours (two). Missed: answered in 7 h, and one overdue.
    assert data["sla"] == {"met": 2, "missed": 2, "compliance_pct": 50.0}
    assert data["csat"] == {"good": 2, "bad": 1, "csat_pct": 66.7}


def test_stats_of_an_empty_desk(db: Database, tmp_path: Path, db_url: str) -> None:
    config = build_config(db_url, tmp_path)
    with db.session() as s:
        data = desk_stats(s, config.hours, MONDAY_9)
    assert data["requests"] == 0
    assert data["first_response"]["median_hours"] is None
    assert data["sla"]["compliance_pct"] is None and data["csat"]["csat_pct"] is None


def test_maild_stats_command(db: Database, tmp_path: Path, db_url: str) -> None:
    _desk(db, tmp_path, db_url)
    config_path = write_toml(mapping(db_url, tmp_path), tmp_path / "config.toml")
    result = maild(config_path, "stats", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["requests"] == 5 and data["csat"]["csat_pct"] == 66.7
    assert data["first_response"]["p90_hours"] == 7.0
    plain = maild(config_path, "stats")
    assert plain.returncode == 0, plain.stderr
    assert "csat        66.7% good (2 good, 1 bad)" in plain.stdout
    assert "first reply median 2.0 h, p90 7.0 h" in plain.stdout
