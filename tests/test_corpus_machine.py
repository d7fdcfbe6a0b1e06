"""A held-out style check over ../shared/corpus: machine mail draws no acknowledgement, and
ordinary mail is never taken for machine mail (issue 9, item 5).

The corpus files are labelled by hand below: MACHINE are bounces, delay notices, read
receipts, feedback-loop complaints and auto-replies; BULK are list posts, newsletters and
spam that carry list or bulk headers (no answer is right for them, but they are not what this
check counts). Everything else is ordinary mail and must be classified as a person's. Run with
`-s` to see the figures.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select
from test_corpus import _run_corpus, corpus_files

from maild.config import Config
from maild.store.db import Database
from maild.store.models import Message, Outbox

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

MACHINE = frozenset(
    {
        "mailgun-flanker/tests__fixtures__messages__bounce__broken-mime.eml",
        "mailgun-flanker/tests__fixtures__messages__bounce__delayed-broken.eml",
        "mailgun-flanker/tests__fixtures__messages__bounce__delayed.eml",
        "mailgun-flanker/tests__fixtures__messages__bounce__gmail-invalid-address.eml",
        "mailgun-flanker/tests__fixtures__messages__bounce__gmail-no-dns.eml",
        "mailgun-flanker/tests__fixtures__messages__bounce__mailbox-full.eml",
        "mailgun-flanker/tests__fixtures__messages__bounce__no-mx.eml",
        "mailgun-flanker/tests__fixtures__messages__bounce__office365.eml",
        "mailgun-flanker/tests__fixtures__messages__bounce__zed.eml",
        "mailgun-flanker/tests__fixtures__messages__complaints__aol.eml",
        "mailgun-flanker/tests__fixtures__messages__complaints__yahoo.eml",
        "mailgun-flanker/tests__fixtures__messages__disposition-notification.eml",
        "mikel-mail/spec__fixtures__emails__mime_emails__raw_email_with_mimepart_without_content_type.eml",
        "mikel-mail/spec__fixtures__emails__multipart_report_emails__multi_address_bounce1.eml",
        "mikel-mail/spec__fixtures__emails__multipart_report_emails__multi_address_bounce2.eml",
        "mikel-mail/spec__fixtures__emails__multipart_report_emails__multipart_report_multiple_status.eml",
        "mikel-mail/spec__fixtures__emails__multipart_report_emails__report_422.eml",
        "mikel-mail/spec__fixtures__emails__multipart_report_emails__report_530.eml",
        "mimekit/UnitTests__TestData__messages__bounce.txt",
        "mimekit/UnitTests__TestData__messages__delivery-status-multiple-blank-lines.txt",
        "mimekit/UnitTests__TestData__messages__delivery-status-no-blank-line.txt",
        "mimekit/UnitTests__TestData__messages__delivery-status.anonymized.eml",
        "mimekit/UnitTests__TestData__messages__delivery-status.txt",
        "mimekit/UnitTests__TestData__messages__delivery-status2.txt",
        "mimekit/UnitTests__TestData__messages__disposition-notification.anonymized.eml",
        "mimekit/UnitTests__TestData__messages__disposition-notification.txt",
        "mimekit/UnitTests__TestData__messages__feedback-report.txt",
        "nodemailer-mailparser/test__fixtures__delivery-status.eml",
        "php-mime-mail-parser/tests__mails__failure.eml",
        "php-mime-mail-parser/tests__mails__issue212",  # Polish Exchange auto-reply, no From
        "spamscope-mail-parser/tests__mails__mail_malformed_2",
        "zbateson-mail-mime-parser/tests___data__emails__m4006.txt",  # Outlook TNEF receipt
    }
)
BULK = frozenset(
    {
        "mailgun-flanker/tests__fixtures__messages__apache-message-news-mime.eml",
        "mailgun-flanker/tests__fixtures__messages__from-encoding.eml",
        "mailgun-flanker/tests__fixtures__messages__long-links.eml",
        "mailgun-flanker/tests__fixtures__messages__message-external-body.eml",
        "mikel-mail/spec__fixtures__emails__error_emails__bad_date_header.eml",
        "mikel-mail/spec__fixtures__emails__error_emails__empty_in_reply_to.eml",
        "mikel-mail/spec__fixtures__emails__error_emails__encoding_madness.eml",
        "mikel-mail/spec__fixtures__emails__plain_emails__raw_email_trailing_dot.eml",
        "nodemailer-mailparser/test__fixtures__large_text.eml",
        "nodemailer-mailparser/test__fixtures__spam.eml",
        "php-mime-mail-parser/tests__mails__m0009",
        "php-mime-mail-parser/tests__mails__m0015",
        "spamscope-mail-parser/tests__mails__mail_test_13",
        "spamscope-mail-parser/tests__mails__mail_test_16",
        "spamscope-mail-parser/tests__mails__mail_test_5",
        "spamscope-mail-parser/tests__mails__mail_test_6",
    }
)


@sqlite_only
def test_machine_mail_is_never_answered_and_people_are_never_machines(
    make_config: Callable[..., Config], db: Database
) -> None:
    files = corpus_files()
    names = {p: p.relative_to(p.parents[1]).as_posix() for p in files}
    assert set(names.values()) >= MACHINE | BULK, "a labelled file is gone from the corpus"
    # Every acknowledgement counts here, however many one address would get in an hour.
    config = make_config(limits={"auto_replies_per_hour": 1_000_000})
    outcome = _run_corpus(config, db)
    by_inbound = {iid: names[path] for iid, path in outcome.stored.items()}
    with db.session() as s:
        acked = set(s.scalars(select(Outbox.ticket_id).where(Outbox.kind == "ack")))
        rows = s.execute(
            select(Message.inbound_id, Message.kind, Message.ticket_id, Message.from_addr)
            .where(Message.direction == "in")
            .order_by(Message.id)
        ).all()
    first_of: dict[int, int] = {}
    for iid, _, tid, _ in rows:
        if tid is not None:
            first_of.setdefault(tid, iid)
    answered = sorted(
        by_inbound[iid]
        for iid, kind, tid, _ in rows
        if by_inbound.get(iid) in MACHINE and tid in acked and first_of.get(tid) == iid
    )
    ordinary = [(iid, kind, sender) for iid, kind, _, sender in rows if by_inbound.get(iid)]
    ordinary = [o for o in ordinary if by_inbound[o[0]] not in MACHINE | BULK and o[2]]
    mistaken = sorted(by_inbound[iid] for iid, kind, _ in ordinary if kind != "customer")
    print(
        f"\nmachine mail answered: {len(answered)} of {len(MACHINE)}; "
        f"ordinary mail taken for machine mail: {len(mistaken)} of {len(ordinary)}"
    )
    assert answered == []
    assert mistaken == []
