"""What every reply kind needs: the desk as sender, the thread of a request, templates."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from maild.config import Config
from maild.replies.compose import AUTO_GENERATED, Outgoing, new_message_id
from maild.replies.context import MailContext
from maild.replies.customer import finish
from maild.security.signing import signed_message_id
from maild.store.direct import Statement
from maild.store.models import Message, Ticket
from maild.threading.tags import tagged_subject

_MESSAGES: Table = Message.__table__  # type: ignore[assignment]


def thread_of(ctx: MailContext, ticket: Ticket) -> tuple[str | None, tuple[str, ...]]:
    """(In-Reply-To, References) that continue the customer's thread of ``ticket``."""
    cache = getattr(ctx, "cache", None)
    key = ("thread", ticket.id)
    if cache is not None and key in cache:
        return cache[key]
    found = _thread_query(ctx.session, ticket)
    if cache is not None:
        cache[key] = found
    return found


_THREAD = Statement(  # asked for most mail to a customer
    select(_MESSAGES.c.message_id)
    .where(
        _MESSAGES.c.ticket_id == bindparam("ticket"),
        _MESSAGES.c.direction == "in",
        _MESSAGES.c.kind == "customer",
        _MESSAGES.c.message_id.is_not(None),
    )
    .order_by(_MESSAGES.c.id.desc())
    .limit(10)
)


def _thread_query(session: Session, ticket: Ticket) -> tuple[str | None, tuple[str, ...]]:
    ids = _THREAD.scalars(session, {"ticket": ticket.id})
    last = ids[0] if ids else ticket.root_message_id
    refs = [r for r in (ticket.root_message_id, *reversed(ids)) if r]
    return last, tuple(dict.fromkeys(refs))


def _texts(
    ctx: MailContext,
    ticket: Ticket,
    lang: str,
    template: str,
    prefix: str,
    suffix: str,
    context: dict[str, Any],
) -> tuple[str, str | None]:
    """(text, html) of the template, after the person's own words (``prefix``), if any."""
    cfg = ctx.config
    text, html = (
        ctx.renderer.render(
            lang, template, desk=cfg.desk, ticket=ticket, now=ctx.clock(), config=cfg, **context
        )
        if template
        else ("", None)
    )
    if prefix or suffix:
        text, html = "\n\n".join(p for p in (prefix.strip(), text.strip(), suffix) if p), None
    return text, html


def mail(
    ctx: MailContext,
    ticket: Ticket,
    *,
    to: Sequence[str],
    template: str,
    language: str | None = None,
    message_id: str | None = None,
    cc: Sequence[str] = (),
    auto: str | None = AUTO_GENERATED,
    sender_name: str | None = None,
    prefix: str = "",
    suffix: str = "",
    attachments: tuple[tuple[str, str, bytes], ...] = (),
    customer: bool = False,
    quote: bool = False,
    **context: Any,
) -> Outgoing:
    """One mail about ``ticket`` from the desk, its text from ``<lang>/<template>.txt.j2``.

    A ``customer`` mail ends with the reply hint and the request page's link, in the desk's
    HTML layout; ``quote`` adds the customer's original request below.
    """
    cfg, now = ctx.config, ctx.clock()
    lang = language or ticket.language
    text, html = _texts(ctx, ticket, lang, template, prefix, suffix, context)
    if customer:
        automatic = auto is not None
        text, html = finish(ctx, ticket, lang, text, html, now, automatic=automatic, quote=quote)
    in_reply_to, refs = thread_of(ctx, ticket)
    return Outgoing(
        sender_name=sender_name or cfg.desk.name,
        sender=cfg.outbound.sender,
        to=tuple(to),
        subject=tagged_subject(cfg.desk.tag, ticket.id, ticket.subject),
        text=text.rstrip("\n") + "\n" if customer else text + "\n",
        html=html,
        message_id=message_id or new_message_id(cfg.desk.domain, f"t.{ticket.id}"),
        loop_name=cfg.desk.address,
        language=lang,
        date=now,
        in_reply_to=in_reply_to,
        references=refs,
        cc=tuple(cc),
        auto_submitted=auto,
        reply_to=cfg.desk.address,
        attachments=attachments,
    )


def when(ctx: MailContext, at: datetime | None, language: str) -> str:
    from maild.replies.render import when_text

    return when_text(at, ctx.clock(), language, ctx.config.desk.timezone) if at else "-"


def staff_message_id(
    config: Config, ticket_id: int, to: str, proof: str = "n", nonce: str | None = None
) -> str:
    """A Message-ID signed for ``to``: their reply to it proves who they are ("n" for an agent,
    "e" for a department; request 0 for mail about no one request; ``nonce`` as in
    maild.security.signing.signed_message_id)."""
    return signed_message_id(config.secret_key, proof, ticket_id, to, config.desk.domain, nonce)


def staff_mail(
    ctx: MailContext, ticket: Ticket, to: str, template: str, *, proof: str = "n", **kw: Any
) -> Outgoing:
    """One mail about ``ticket`` to one agent or department, in the desk's language (unless
    ``language`` is given), with a Message-ID signed for them; ``kw`` as for ``mail``."""
    kw.setdefault("language", ctx.config.desk.language)
    mid = staff_message_id(ctx.config, ticket.id, to, proof)
    return mail(ctx, ticket, to=[to], template=template, message_id=mid, **kw)


def customer_mail(ctx: MailContext, ticket: Ticket, template: str, **kw: Any) -> Outgoing:
    """One mail about ``ticket`` to its requester, copied to its CCs, in the customer layout
    (``kw`` as for ``mail``)."""
    cc = [c.email for c in ticket.ccs]
    return mail(ctx, ticket, to=[ticket.requester], cc=cc, template=template, customer=True, **kw)
