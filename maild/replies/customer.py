"""What every mail to a customer ends with, and the one HTML layout they all share.

The text part stays complete on its own: the body, the hint that a reply adds a comment, the
signed link to the request's page, the signature and (for agent replies) the customer's
original request quoted below. The HTML part shows the same in the desk's layout.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup, escape
from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.config import Config
from maild.replies.context import MailContext
from maild.replies.render import local_time
from maild.security.signing import page_url
from maild.store.models import Message, Ticket

log = logging.getLogger(__name__)

_URL = re.compile(r"https?://[^\s<>\"']+[^\s<>\"'.,;:!?)]")
QUOTE_LINES = 40


@dataclass(frozen=True)
class Quoted:
    """The customer's original request, as the agent's reply quotes it."""

    at: str
    lines: tuple[str, ...]


def link_for(config: Config, ticket_id: int, now: datetime) -> str:
    expires = now + timedelta(days=config.web.page_days)
    return page_url(config.web.base_url, config.secret_key, ticket_id, expires)


def original(session: Session, ticket: Ticket, config: Config, language: str) -> Quoted | None:
    """The first message the customer wrote on ``ticket``, for quoting below a reply."""
    first = session.scalar(
        select(Message)
        .where(
            Message.ticket_id == ticket.id, Message.direction == "in", Message.kind == "customer"
        )
        .order_by(Message.id)
        .limit(1)
    )
    if first is None or not first.text.strip():
        return None
    lines = first.text.strip().splitlines()
    if len(lines) > QUOTE_LINES:
        lines = [*lines[:QUOTE_LINES], "[...]"]
    return Quoted(local_time(first.created_at, config.desk.timezone, language), tuple(lines))


def paragraphs(text: str) -> Markup:
    """Plain text as HTML paragraphs: escaped, line breaks kept, links clickable."""
    out = []
    for block in re.split(r"\n\s*\n", text.strip()):
        html = _URL.sub(_link, str(escape(block)))  # escaped first: only our tags are markup
        out.append('<p style="margin:0 0 14px 0">' + html.replace("\n", "<br>\n") + "</p>")
    return Markup("\n".join(out))  # noqa: S704 - built from escaped text above


def _link(m: re.Match[str]) -> str:
    return f'<a href="{m.group(0)}" style="color:#1a56a6">{m.group(0)}</a>'


def finish(
    ctx: MailContext,
    ticket: Ticket,
    language: str,
    body: str,
    body_html: str | None,
    now: datetime,
    *,
    automatic: bool,
    quote: bool = False,
    **extra: Any,
) -> tuple[str, str]:
    """(text, html) of a customer mail whose own words are ``body`` (and ``body_html``)."""
    context: dict[str, Any] = {
        "desk": ctx.config.desk,
        "ticket": ticket,
        "page_url": link_for(ctx.config, ticket.id, now),
        "automatic": automatic,
        "quoted": original(ctx.session, ticket, ctx.config, language) if quote else None,
        **extra,
    }
    env = ctx.renderer.env
    footer = env.get_template(f"{language}/customer_footer.txt.j2").render(**context)
    text = body.strip() + "\n\n" + footer.strip() + "\n"
    # body_html comes from an autoescaped .html.j2 template: already safe markup
    content = Markup(body_html) if body_html else paragraphs(body)  # noqa: S704
    html = env.get_template(f"{language}/customer.html.j2").render(content=content, **context)
    return text, html
