"""How an agent proves who wrote, `[security] agent_proof` (issue 9, item 6).

"signed-id": a reply to a notification's signed Message-ID; "dkim": a DKIM signature maild
verifies itself (dkimpy; a test key, resolved by a dnsfunc, no network); "authres": the
topmost Authentication-Results of a trusted server, honoured only for mail the operator's own
MTA handed over (LMTP, `deliver`, IMAP) or on an SMTP listener `behind_mta`.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim
import pytest
from conftest import RunningDaemon, make_mail, wait_for
from dkim import dknewkey
from sqlalchemy import select

from maild.config import Config
from maild.core.errors import ConfigError
from maild.ingest.accept import store_raw
from maild.pipeline.runner import Pipeline
from maild.store.db import Database
from maild.store.models import Outbox, Ticket, TicketCc

TRUSTED = ["mx.example.com"]
FORGED = "Authentication-Results: mx.example.com; dkim=pass header.d=example.com\r\n"
SELECTOR = b"test"


def _security(*proofs: str) -> dict[str, Any]:
    return {"trusted_authserv_ids": TRUSTED, "agent_proof": list(proofs)}


def _agent_mail(
    extra: str = "", body: str = "#priority urgent\n#cc add evil@x.test\nOn it."
) -> bytes:
    return make_mail(
        "Re: [Support #1] Printer is broken", sender="anna@example.com", body=body, extra=extra
    )


def _ticket(db: Database) -> Ticket:
    with db.session() as s:
        t = s.get(Ticket, 1)
        assert t is not None
        return t


def _ccs(db: Database) -> list[str]:
    with db.session() as s:
        return list(s.scalars(select(TicketCc.email)))


def _agent_replies(db: Database) -> int:
    with db.session() as s:
        return len(s.scalars(select(Outbox).where(Outbox.kind == "agent-reply")).all())


# --- configuration ------------------------------------------------------------------


@pytest.mark.usefixtures("db")
def test_default_is_signed_id_only(make_config: Callable[..., Config]) -> None:
    config = make_config()
    assert config.agent_proof == ("signed-id",)
    assert config.smtp.behind_mta is False


@pytest.mark.usefixtures("db")
@pytest.mark.parametrize(
    ("security", "smtp", "message"),
    [
        ({"agent_proof": ["signed-id", "pgp"]}, {}, "security.agent_proof: must be"),
        ({"agent_proof": []}, {}, "security.agent_proof: must be"),
        ({"agent_proof": ["dkim", "dkim"]}, {}, "security.agent_proof: must be"),
        ({"agent_proof": ["authres"]}, {}, 'security.agent_proof: "authres" needs'),
        ({}, {"behind_mta": "yes"}, "smtp.behind_mta: must be bool"),
    ],
)
def test_bad_values_name_the_key(
    make_config: Callable[..., Config],
    security: dict[str, Any],
    smtp: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(security=security, smtp=smtp)
    assert str(err.value).startswith(f"config error: {message}")


# --- authres: only where our own MTA wrote the header -------------------------------


def _open_by_smtp(d: RunningDaemon, db: Database) -> None:
    d.send(make_mail("Printer is broken"))
    wait_for(lambda: _agent_replies(db) == 0 and _has_ticket(db))


def _has_ticket(db: Database) -> bool:
    with db.session() as s:
        return s.get(Ticket, 1) is not None


@pytest.mark.parametrize(
    "security",
    [{"trusted_authserv_ids": TRUSTED}, _security("signed-id", "authres")],
    ids=["trusted-ids-only", "authres-enabled"],
)
def test_forged_authres_straight_to_the_smtp_listener_makes_nobody_an_agent(
    make_config: Callable[..., Config],
    db: Database,
    running: Callable[..., RunningDaemon],
    security: dict[str, Any],
) -> None:
    d = running(make_config(security=security))
    _open_by_smtp(d, db)
    d.send(_agent_mail(FORGED), sender="anna@example.com")
    wait_for(lambda: len(_inbound_done(db)) == 2)
    assert _ticket(db).priority == "normal"
    assert _ccs(db) == []
    assert _agent_replies(db) == 0


def _inbound_done(db: Database) -> list[int]:
    from maild.store.models import Inbound

    with db.session() as s:
        return list(s.scalars(select(Inbound.id).where(Inbound.state == "done")))


def test_authres_on_an_smtp_listener_behind_the_mta_is_honoured(
    make_config: Callable[..., Config], db: Database, running: Callable[..., RunningDaemon]
) -> None:
    d = running(make_config(security=_security("signed-id", "authres"), smtp={"behind_mta": True}))
    _open_by_smtp(d, db)
    d.send(_agent_mail(FORGED), sender="anna@example.com")
    wait_for(lambda: _ticket(db).priority == "urgent")
    assert _ccs(db) == ["evil@x.test"]


def test_authres_by_lmtp_is_honoured(
    make_config: Callable[..., Config], db: Database, running: Callable[..., RunningDaemon]
) -> None:
    d = running(
        make_config(security=_security("signed-id", "authres"), lmtp={"listen": "127.0.0.1:0"})
    )
    assert d.daemon is not None
    with smtplib.LMTP("127.0.0.1", d.daemon.lmtp_port) as client:
        client.sendmail("customer@example.org", ["support@example.com"], make_mail("Broken"))
        wait_for(lambda: _has_ticket(db))
        client.sendmail("anna@example.com", ["support@example.com"], _agent_mail(FORGED))
    wait_for(lambda: _ticket(db).priority == "urgent")


@pytest.mark.parametrize(
    ("source", "proofs", "proven"),
    [
        ("pipe", ("signed-id", "authres"), True),
        ("imap", ("signed-id", "authres"), True),
        ("lmtp", ("signed-id", "authres"), True),
        ("smtp", ("signed-id", "authres"), False),
        ("pipe", ("signed-id",), False),
        ("pipe", ("signed-id", "dkim"), False),
    ],
)
def test_authres_by_source(
    make_config: Callable[..., Config],
    db: Database,
    source: str,
    proofs: tuple[str, ...],
    proven: bool,
) -> None:
    pipeline = Pipeline(make_config(security=_security(*proofs)), db)
    for raw in (make_mail("Printer is broken"), _agent_mail(FORGED)):
        stored = store_raw(db, raw, source=source)
        pipeline.process(ids=[stored.ident])
    assert (_ticket(db).priority == "urgent") is proven


# --- dkim: maild verifies the signature itself ----------------------------------------


class Keys:
    """An RSA key made with dkimpy's helpers, and a dnsfunc that serves its public half."""

    def __init__(self, tmp_path: Path) -> None:
        private = tmp_path / "dkim.key"
        dknewkey.GenRSAKeys(str(private), verbose=False)
        dknewkey.ExtractRSADnsPublicKey(str(private), str(tmp_path / "dkim.dns"), verbose=False)
        self.private = private.read_bytes()
        self.txt = (tmp_path / "dkim.dns").read_bytes()
        self.lookups: list[bytes] = []

    def dnsfunc(self, name: bytes, timeout: int = 5) -> bytes | None:  # noqa: ARG002 (dkimpy passes timeout=)
        self.lookups.append(name)
        return self.txt if name == b"test._domainkey.example.com." else None

    def sign(self, raw: bytes, domain: bytes = b"example.com", **kw: Any) -> bytes:
        headers = [b"from", b"to", b"subject", b"message-id", b"date"]
        signature = dkim.sign(
            raw, SELECTOR, domain, self.private, include_headers=headers, linesep=b"\r\n", **kw
        )
        return bytes(signature) + raw


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("dkim"))


def _run_dkim(
    make_config: Callable[..., Config], db: Database, keys: Keys, agent_raw: bytes, *proofs: str
) -> Ticket:
    config = make_config(security={"agent_proof": list(proofs)})
    pipeline = Pipeline(config, db, dnsfunc=keys.dnsfunc)
    for raw in (make_mail("Printer is broken"), agent_raw):
        pipeline.process(ids=[store_raw(db, raw, source="smtp").ident])
    return _ticket(db)


def test_a_real_dkim_signature_proves_an_agent_on_the_smtp_listener(
    make_config: Callable[..., Config], db: Database, keys: Keys
) -> None:
    signed = keys.sign(_agent_mail())
    assert _run_dkim(make_config, db, keys, signed, "signed-id", "dkim").priority == "urgent"
    assert _ccs(db) == ["evil@x.test"]
    assert _agent_replies(db) == 1


@pytest.mark.parametrize(
    ("case", "proofs"),
    [
        ("dkim not accepted", ("signed-id",)),
        ("body changed after signing", ("dkim",)),
        ("d= is another domain", ("dkim",)),
        ("l= body length", ("dkim",)),
        ("no signature, forged authres", ("dkim",)),
    ],
)
def test_what_dkim_does_not_prove(
    make_config: Callable[..., Config],
    db: Database,
    keys: Keys,
    case: str,
    proofs: tuple[str, ...],
) -> None:
    raw = _agent_mail()
    if case == "body changed after signing":
        raw = keys.sign(raw).replace(b"On it.", b"On it!")
    elif case == "d= is another domain":
        raw = keys.sign(raw, domain=b"other.example")
    elif case == "l= body length":
        raw = keys.sign(raw, length=True)
    elif case == "no signature, forged authres":
        raw = _agent_mail(FORGED)
    else:
        raw = keys.sign(raw)
    assert _run_dkim(make_config, db, keys, raw, *proofs).priority == "normal"
    assert _ccs(db) == []


def test_dkim_is_checked_only_for_a_staff_from(
    make_config: Callable[..., Config], db: Database, keys: Keys
) -> None:
    keys.lookups.clear()
    signed = keys.sign(make_mail("Hello", sender="stranger@example.com"))
    _run_dkim(make_config, db, keys, signed, "dkim")
    assert keys.lookups == []
