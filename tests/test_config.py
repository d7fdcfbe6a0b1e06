"""config.toml: the shipped example works; every wrong or missing key is named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from maild.config import load
from maild.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_example_loads() -> None:
    cfg = load(ROOT / "config.toml")
    assert cfg.desk.address == "support@example.com"
    assert cfg.storage_url.startswith("sqlite:///") and cfg.storage_url.endswith("var/maild.db")
    assert cfg.smtp.listen == "127.0.0.1:2525"
    assert cfg.web.listen == "127.0.0.1:8080"
    assert cfg.outbound.url.startswith("maildir:")
    assert [a.email for a in cfg.agents] == ["anna@example.com", "boris@example.com"]
    assert cfg.pipeline.workers == 2
    assert cfg.digest.at is not None and cfg.digest.at.isoformat() == "09:00:00"
    assert cfg.web.board_hours == 12


BAD = [
    ("[desk]\nname='x'\naddress='nope'\n", "desk.address"),
    ("[desk]\naddress='a@b.org'\n", "desk.name"),
    ("[desk]\nname='x'\naddress='a@b.org'\ntimezone='Mars/Base'\n", "desk.timezone"),
    ("[desk]\nname='x'\naddress='a@b.org'\nlanguage='de'\n", "desk.language"),
    ("[desk]\nname='x'\naddress='a@b.org'\ncolour='red'\n", "desk.colour"),
    ("[smtp]\nlisten='2525'\n", "smtp.listen"),
    ("[smtp]\nmax_message_size='big'\n", "smtp.max_message_size"),
    ("[storage]\nurl='mysql://x'\n", "storage.url"),
    ("[outbound]\nurl='ftp://x'\n", "outbound.url"),
    ("[outbound]\nstarttls=true\ntls=true\n", "outbound.tls"),
    ("[web]\nbase_url='ftp://x'\n", "web.base_url"),
    ("[[agents]]\nname='x'\n", "agents[0].email"),
    ("[hours]\nstart='9am'\n", "hours.start"),
    ("[hours]\nholidays=['2027-13-01']\n", "hours.holidays[0]"),
    ("[limits]\nmax_parts=0\n", "limits.max_parts"),
    ("[limits]\nmails_per_request_hour=0\n", "limits.mails_per_request_hour"),
    ("[limits]\nauto_replies_per_hour=-1\n", "limits.auto_replies_per_hour"),
    ("[limits]\nmessage_seconds=0\n", "limits.message_seconds"),
    ("[limits]\nmessage_seconds=2.5\n", "limits.message_seconds"),
    ("[pipeline]\nworkers=17\n", "pipeline.workers"),
    ("[pipeline]\nworkers=-1\n", "pipeline.workers"),
    ("[nonsense]\nx=1\n", "nonsense"),
    ("[digest]\nat='nine'\n", "digest.at"),
    ("[digest]\nat=9\n", "digest.at"),
    ("[digest]\nwhen='09:00'\n", "digest.when"),
    ("[web]\nboard_hours=0\n", "web.board_hours"),
    ("[web]\nboard_hours='long'\n", "web.board_hours"),
    ("[kb]\nsimilar_threshold=0\n", "kb.similar_threshold"),
    ("[kb]\nsuggest_threshold='high'\n", "kb.suggest_threshold"),
    ("[kb]\nsimilar=0.5\n", "kb.similar"),
]
GOOD_DESK = "[desk]\nname='Desk'\naddress='support@example.com'\n"
SECRET = "[security]\nsecret_key='0123456789abcdef0123'\n"


@pytest.mark.parametrize(("body", "key"), BAD)
def test_bad_key_is_named(tmp_path: Path, body: str, key: str) -> None:
    text = body if body.startswith("[desk]") else GOOD_DESK + body
    if "[security]" not in text:
        text += SECRET
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.key == key, str(err.value)


def test_short_secret_refused_and_env_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(GOOD_DESK + "[security]\nsecret_key='short'\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.key == "security.secret_key"
    monkeypatch.setenv("MAILD_SECRET_KEY", "a-long-enough-secret-from-env")
    assert load(path).secret_key == "a-long-enough-secret-from-env"


def test_cli_stops_with_one_line_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(GOOD_DESK + SECRET + "[smtp]\nlisten='localhost'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "maild", "--config", str(path), "run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "smtp.listen" in lines[0], proc.stderr


def test_missing_file_is_named(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "maild", "--config", str(tmp_path / "no.toml"), "init"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 78 and "no.toml" in proc.stderr
