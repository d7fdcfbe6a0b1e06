"""`GET /metrics` and `/`: figures that move when mail flows through a real daemon."""

from __future__ import annotations

import smtplib
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from conftest import RunningDaemon, make_mail, wait_for
from prometheus_client.parser import text_string_to_metric_families

from maild.config import Config
from maild.store.db import Database
from maild.store.models import Inbound, Outbox


def scrape(daemon: RunningDaemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert daemon.daemon is not None
    url = f"http://127.0.0.1:{daemon.daemon.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_metrics_move_when_mail_flows_through_worker_processes(
    make_config: Callable[..., Config], db: Database, running: Callable[..., RunningDaemon]
) -> None:
    daemon = running(make_config(pipeline={"workers": 1}))
    before = scrape(daemon)
    assert before[("maild_mail_processed_total", ())] == 0
    assert before[("maild_pipeline_latency_seconds_count", ())] == 0
    for n in range(3):
        daemon.send(make_mail(subject=f"Printer {n}"))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        daemon.send(b"this is not a mail at all\r\n")
    assert refused.value.smtp_code == 554

    def processed() -> bool:
        with db.session() as s:
            done = s.query(Inbound).filter(Inbound.state == "done").count()
            sent = s.query(Outbox).filter(Outbox.state == "sent").count()
        return done == 3 and sent >= 3

    wait_for(processed)
    after = scrape(daemon)
    assert after[("maild_mail_accepted_total", (("source", "smtp"),))] == 3
    assert after[("maild_mail_refused_total", (("code", "554"), ("source", "smtp")))] == 1
    # Processed in another process: read from the database, not from this one's memory.
    assert after[("maild_mail_processed_total", ())] == 3
    assert after[("maild_inbound_messages", (("source", "smtp"), ("state", "done")))] == 3
    assert after[("maild_requests", (("status", "new"),))] == 3
    assert after[("maild_outbox_messages", (("state", "sent"),))] >= 3
    assert after[("maild_outbox_messages", (("state", "failed"),))] == 0
    assert after[("maild_pipeline_latency_seconds_count", ())] == 3
    assert after[("maild_pipeline_latency_seconds_bucket", (("le", "+Inf"),))] == 3
    assert after[("maild_sla_breaches_total", ())] == 0
    assert after[("maild_survey_ratings_total", (("rating", "good"),))] == 0
    assert after[("maild_mail_quarantined", ())] == 0
    assert after[("maild_http_requests_total", (("status", "200"),))] >= 1
    # A second scrape does not count the same messages twice.
    assert scrape(daemon)[("maild_pipeline_latency_seconds_count", ())] == 3


@pytest.mark.usefixtures("config")
def test_landing_page_is_not_a_bare_404(running: Callable[..., RunningDaemon]) -> None:
    daemon = running()
    assert daemon.daemon is not None
    base = f"http://127.0.0.1:{daemon.daemon.web_port}"
    with urllib.request.urlopen(base + "/", timeout=10) as response:
        page = response.read().decode()
        assert response.headers["X-Frame-Options"] == "DENY"
    assert "support@example.com" in page and "Example Support" in page
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(base + "/nothing-here", timeout=10)
    assert missing.value.code == 404
    values = scrape(daemon)
    assert values[("maild_http_requests_total", (("status", "404"),))] == 1


@pytest.mark.usefixtures("db")
def test_refused_recipients_are_counted_by_code(
    make_config: Callable[..., Config], running: Callable[..., RunningDaemon]
) -> None:
    daemon = running(make_config(smtp={"listen": "127.0.0.1:0", "max_recipients": 1}))
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        refused = client.sendmail(
            "customer@example.org", ["support@example.com", "help@example.com"], make_mail()
        )
    assert refused["help@example.com"][0] == 452
    values = scrape(daemon)
    assert values[("maild_mail_refused_total", (("code", "452"), ("source", "smtp")))] == 1
    assert values[("maild_mail_accepted_total", (("source", "smtp"),))] == 1
