"""Synthetic but realistic customer mail for the benchmark: raw RFC 5322 bytes, CRLF line ends.

Everything here is cheap on purpose (the client shares the machine with the daemon): the 100 KB
attachment is one random block with a unique prefix (so every attachment has its own content
hash, as in real life).

Bodies vary as a desk's mail does: each new request has its own topic, a few dozen words drawn
from a large generated vocabulary (``VOCABULARY_SIZE`` made-up words per language, fixed for a
seed), written into sentences between real greetings, linking words and signatures. So two
random requests share little more than their subject line and are rarely alike by issue 12's
measure (until 2 Dec 2026 the bodies came from ten fixed paragraphs and ~85 % of new requests
joined problems). ``alike_share`` makes that share of new requests an outage wave instead: one
subject and one set of words per factory, a word or two of each mail changed, so the incident
path can still be measured. A customer's reply quotes their own request.
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import quopri
import random
from dataclasses import dataclass
from email.header import Header
from email.utils import formatdate

CRLF = "\r\n"

SUBJECTS_RU = [
    "Не приходит письмо для сброса пароля",
    "Ошибка 502 при оплате заказа",
    "Вопрос по счёту за май",
    "Не могу войти в личный кабинет",
    "Прошу вернуть деньги за двойное списание",
    "Как изменить тариф?",
    "Приложение вылетает на Android 14",
    "Не работает выгрузка в 1С",
    "Смена контактного лица в договоре",
    "Доставка задерживается уже неделю",
    "Не отображаются вложения в письмах",
    "Нужна копия акта сверки",
    "Срочно: сайт недоступен",
    "Подключение второго пользователя",
    "Где найти закрывающие документы?",
]
SUBJECTS_EN = [
    "Password reset mail never arrives",
    "Invoice for May is wrong",
    "Cannot log in since yesterday",
    "Refund for a double charge",
    "Export to CSV fails with an error",
]
NAMES_RU = [
    "Иван Петров",
    "Мария Смирнова",
    "Ольга Кузнецова",
    "Алексей Соколов",
    "Наталья Попова",
    "Дмитрий Лебедев",
    "Екатерина Новикова",
    "Сергей Морозов",
]
NAMES_EN = ["John Smith", "Emma Brown", "Liam Wilson", "Olivia Taylor"]
PARAS_RU = [
    "Здравствуйте! Со вчерашнего дня не могу воспользоваться сервисом: после ввода логина и "
    "пароля страница обновляется и снова показывает форму входа. Пробовал разные браузеры "
    "(Chrome, Firefox, Яндекс.Браузер), очищал кэш и куки, результат тот же.",
    "Заказ был оформлен две недели назад, номер заказа указан в теме письма. В личном кабинете "
    "статус так и остался «Передан в службу доставки», трек-номер не отслеживается, а на "
    "горячей линии мне посоветовали написать сюда.",
    "В выписке банка вижу два одинаковых списания на одну и ту же сумму с разницей в "
    "несколько минут. Прошу проверить и вернуть лишний платёж на карту, с которой он был "
    "списан. Скриншот выписки прикладываю.",
    "Мы используем ваш продукт в отделе продаж уже третий год, и до последнего обновления "
    "всё работало без нареканий. После обновления выгрузка отчётов занимает больше десяти "
    "минут и часто обрывается с ошибкой «Превышено время ожидания».",
    "Подскажите, пожалуйста, каким образом можно перейти на другой тарифный план с "
    "сохранением всех данных и истории? В документации нашёл только описание для новых "
    "клиентов, а у нас действующий договор.",
    "Дополнительно сообщаю, что ошибка воспроизводится стабильно: достаточно открыть раздел "
    "«Отчёты», выбрать период больше одного месяца и нажать «Сформировать». На небольших "
    "периодах всё работает.",
    "Заранее спасибо за помощь. Если нужна дополнительная информация — логи, версии, доступ "
    "к тестовому стенду — напишите, я всё предоставлю в течение дня.",
    "Обращаю внимание, что это уже второе обращение по этому вопросу: первое осталось без "
    "ответа. Вопрос срочный, так как от него зависит закрытие месяца в бухгалтерии.",
    "Также прошу направить оригиналы закрывающих документов по адресу, указанному в "
    "договоре: счёт-фактуру, акт выполненных работ и акт сверки за второй квартал.",
    "С уважением,\nменеджер по закупкам\nООО «Ромашка»\nтел. +7 (495) 123-45-67",
]
PARAS_EN = [
    "Hello, since yesterday I cannot use the service: after entering my login and password "
    "the page reloads and shows the sign-in form again. I tried Chrome and Firefox and "
    "cleared the cache and cookies, with the same result.",
    "My bank statement shows two identical charges a few minutes apart. Please check and "
    "refund the extra payment to the card it was taken from. A screenshot is attached.",
    "We have used your product in our sales team for three years and everything worked "
    "until the last update. Since then the report export takes more than ten minutes and "
    "often fails with a timeout error.",
    "Thanks in advance for your help. If you need more information (logs, versions, access "
    "to a test system) just let me know.",
    "Best regards,\nPurchasing manager\nAcme Ltd.\n+44 20 7946 0000",
]
REPLY_TEXT_RU = [
    "Добрый день! Спасибо за быстрый ответ. Проблема сохраняется, прикладываю подробности.",
    "Уточняю: ошибка появляется только при оплате картой «Мир», с Visa всё проходит.",
    "Здравствуйте, есть ли новости по моему обращению? Прошло уже два дня.",
    "Спасибо, всё заработало! Можно закрывать заявку.",
]
REPLY_TEXT_EN = [
    "Hi, thanks for the quick answer. The problem is still there, details below.",
    "Any news on this? It has been two days.",
]
REPLY_PREFIXES = ["Re: ", "RE: ", "Re: Re: ", "Ответ: ", "Отв: ", "AW: ", "RE: Ответ: "]
GREETINGS_RU = ["Здравствуйте!", "Добрый день!", "Добрый день, коллеги!", "Здравствуйте."]
GREETINGS_EN = ["Hello,", "Hi,", "Dear support team,", "Good morning,"]
CLOSINGS_RU = [
    "Заранее спасибо за помощь.",
    "С уважением,\nменеджер по закупкам\nООО «Ромашка»\nтел. +7 (495) 123-45-67",
    "Спасибо!",
    "С уважением, Иван.",
]
CLOSINGS_EN = [
    "Thanks in advance for your help.",
    "Best regards,\nPurchasing manager\nAcme Ltd.\n+44 20 7946 0000",
    "Cheers",
]
# Real linking words between the topic's words (most are stop words to issue 12's measure).
_GLUE_RU = "и в не что на с как а то так но по уже или для при после если когда это"
GLUE_RU = _GLUE_RU.split()
_GLUE_EN = "and the in not that on with as but so for after if when this it is was"
GLUE_EN = _GLUE_EN.split()
VOCABULARY_SIZE = 20000
TOPIC_WORDS = 30  # a request's own words
ATTACHMENT_BYTES = 100 * 1024
_BLOCK = os.urandom(ATTACHMENT_BYTES)


def add_alike_share(parser: argparse.ArgumentParser) -> None:
    """The option both benchmarks take for an outage wave among the new requests."""
    parser.add_argument(
        "--alike-share",
        type=float,
        default=0.0,
        metavar="PCT",
        help="per cent of new requests that are one outage wave (issue 12's incidents; 0)",
    )


@dataclass
class Request:
    """A new request the benchmark sent; replies come from the same person."""

    message_id: str
    sender: str
    name: str
    subject: str
    russian: bool
    charset: str
    text: str  # the body, which the replies quote
    replies: int = 0


@dataclass(frozen=True)
class Outgoing:
    """One generated message: what smtplib needs plus what the benchmark records."""

    message_id: str
    sender: str
    recipient: str
    raw: bytes
    kind: str  # new | reply
    tagged: bool
    attachment: bool
    parent: str | None  # the request's Message-ID for a reply


def _vocabulary(seed: int, onsets: str, vowels: str, codas: str) -> list[str]:
    """``VOCABULARY_SIZE`` distinct made-up words of 2-4 syllables (their first six letters,
    issue 12's stem, differ for most pairs)."""
    rng = random.Random(seed)
    found: set[str] = set()
    while len(found) < VOCABULARY_SIZE:
        word = "".join(
            rng.choice(onsets)
            + rng.choice(vowels)
            + (rng.choice(codas) if rng.random() < 0.3 else "")
            for _ in range(rng.randint(2, 4))
        )
        found.add(word)
    return sorted(found)


VOCAB_RU = _vocabulary(11, "бвгдзклмнпрстфхцчшщж", "аеиоуыяю", "нрлмст")
VOCAB_EN = _vocabulary(12, "bcdfghjklmnprstvwz", "aeiou", "nrlmstk")


def _sentences(rng: random.Random, topic: list[str], russian: bool, target: int) -> list[str]:
    """Paragraphs of sentences mixing the topic's words with real linking words."""
    glue = GLUE_RU if russian else GLUE_EN
    paras: list[str] = []
    size = 0
    while size < target:
        sentences = []
        for _ in range(rng.randint(2, 4)):
            ws = [rng.choice(topic) if rng.random() < 0.6 else rng.choice(glue) for _ in range(12)]
            sentences.append(" ".join(ws).capitalize() + ".")
        para = " ".join(sentences)
        paras.append(para)
        size += len(para.encode("utf-8")) + 2
    return paras


def _request_text(rng: random.Random, topic: list[str], russian: bool, target: int) -> str:
    greeting = rng.choice(GREETINGS_RU if russian else GREETINGS_EN)
    closing = rng.choice(CLOSINGS_RU if russian else CLOSINGS_EN)
    paras = _sentences(rng, topic, russian, target)
    if len(paras) > 2:  # some real prose too, after the words issue 12 compares
        paras[-1] = rng.choice(PARAS_RU if russian else PARAS_EN)
    return "\n\n".join([greeting, *paras, closing])


def _encode_words(text: str, charset: str) -> str:
    return Header(text, charset).encode(linesep=CRLF)


def _address(name: str, addr: str, charset: str) -> str:
    return f"{_encode_words(name, charset)} <{addr}>"


def _wrap(data: str, width: int = 76) -> str:
    return CRLF.join(data[i : i + width] for i in range(0, len(data), width))


def _text_part(text: str, charset: str, rng: random.Random, subtype: str = "plain") -> str:
    """A text/* part with headers, encoded with base64 or quoted-printable."""
    data = text.replace("\n", "\r\n").encode(charset, "replace")
    if rng.random() < 0.5:
        cte, payload = "base64", _wrap(base64.b64encode(data).decode("ascii"))
    else:
        cte = "quoted-printable"
        payload = quopri.encodestring(data).decode("ascii").replace("\r\n", "\n")
        payload = payload.replace("\n", CRLF)
    return (
        f"Content-Type: text/{subtype}; charset={charset}{CRLF}"
        f"Content-Transfer-Encoding: {cte}{CRLF}{CRLF}{payload}{CRLF}"
    )


def _html_of(text: str) -> str:
    paras = "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in text.split("\n\n"))
    return f"<html><head><meta charset=utf-8></head><body>{paras}</body></html>"


def _attachment_part(serial: int) -> str:
    data = serial.to_bytes(16, "big") + _BLOCK[16:]
    payload = _wrap(base64.b64encode(data).decode("ascii"))
    return (
        f'Content-Type: application/pdf; name="scan-{serial}.pdf"{CRLF}'
        f"Content-Transfer-Encoding: base64{CRLF}"
        f'Content-Disposition: attachment; filename="scan-{serial}.pdf"{CRLF}{CRLF}'
        f"{payload}{CRLF}"
    )


class MailFactory:
    """Builds new requests and replies; deterministic for a seed, unique per ``run``."""

    def __init__(
        self, run: str, desk_address: str, tag: str, seed: int = 1, alike_share: float = 0.0
    ) -> None:
        self.run = run
        self.desk = desk_address
        self.tag = tag
        self.rng = random.Random(seed)
        self.serial = 0
        self.alike_share = alike_share  # 0..1: new requests that are one outage wave
        self.wave_ru = self.rng.sample(VOCAB_RU, TOPIC_WORDS // 2)
        self.wave_en = self.rng.sample(VOCAB_EN, TOPIC_WORDS // 2)

    def _next(self) -> tuple[int, str]:
        self.serial += 1
        return self.serial, f"<bench.{self.run}.{self.serial}@client.example.org>"

    def _pick_charset(self, russian: bool) -> str:
        if not russian:
            return "utf-8"
        r = self.rng.random()
        return "utf-8" if r < 0.7 else ("koi8-r" if r < 0.85 else "windows-1251")

    def _assemble(
        self,
        headers: list[str],
        text: str,
        charset: str,
        attachment: bool,
        serial: int,
    ) -> bytes:
        rng = self.rng
        with_html = rng.random() < 0.3
        if not attachment and not with_html:
            headers.append("MIME-Version: 1.0")
            part = _text_part(text, charset, rng)
            return (CRLF.join(headers) + CRLF + part).encode("ascii")
        body_part = _text_part(text, charset, rng)
        if with_html:
            b = f"alt-{self.run}-{serial}"
            body_part = (
                f'Content-Type: multipart/alternative; boundary="{b}"{CRLF}{CRLF}'
                f"--{b}{CRLF}{body_part}"
                f"--{b}{CRLF}{_text_part(_html_of(text), charset, rng, 'html')}"
                f"--{b}--{CRLF}"
            )
        if not attachment:
            headers.append("MIME-Version: 1.0")
            return (CRLF.join(headers) + CRLF + body_part).encode("ascii")
        b = f"mix-{self.run}-{serial}"
        headers += ["MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{b}"']
        out = (
            CRLF.join(headers)
            + CRLF
            + CRLF
            + f"This is a multi-part message in MIME format.{CRLF}"
            + f"--{b}{CRLF}{body_part}"
            + f"--{b}{CRLF}{_attachment_part(serial)}"
            + f"--{b}--{CRLF}"
        )
        return out.encode("ascii")

    def new_request(self, attachment: bool) -> tuple[Outgoing, Request]:
        rng = self.rng
        serial, msgid = self._next()
        russian = rng.random() < 0.85
        charset = self._pick_charset(russian)
        vocab = VOCAB_RU if russian else VOCAB_EN
        if self.alike_share and rng.random() < self.alike_share:
            # The outage wave: one subject and one set of words, a word or two changed.
            subject = "Срочно: сайт недоступен" if russian else "Site is down"
            topic = [*(self.wave_ru if russian else self.wave_en), *rng.sample(vocab, 2)]
            text = _request_text(rng, topic, russian, rng.randint(800, 1500))
        else:
            subject = rng.choice(SUBJECTS_RU if russian else SUBJECTS_EN)
            topic = rng.sample(vocab, TOPIC_WORDS)
            text = _request_text(rng, topic, russian, rng.randint(1500, 5000))
        name = rng.choice(NAMES_RU if russian else NAMES_EN)
        sender = f"customer-{self.run}-{serial}@client.example.org"
        headers = [
            f"From: {_address(name, sender, charset)}",
            f"To: {self.desk}",
            f"Subject: {_encode_words(subject, charset)}",
            f"Date: {formatdate()}",
            f"Message-ID: {msgid}",
            "X-Mailer: maild-bench",
        ]
        raw = self._assemble(headers, text, charset, attachment, serial)
        req = Request(msgid, sender, name, subject, russian, charset, text)
        return Outgoing(msgid, sender, self.desk, raw, "new", False, attachment, None), req

    def reply(
        self,
        req: Request,
        attachment: bool,
        ticket: int | None,
        ack_message_id: str | None,
    ) -> Outgoing:
        """A customer's reply: to the acknowledgement when the number is known (tag and
        In-Reply-To the ack), else a follow-up to their own first mail (In-Reply-To only)."""
        rng = self.rng
        serial, msgid = self._next()
        req.replies += 1
        prefix = rng.choice(REPLY_PREFIXES)
        if ticket is not None:
            subject = f"{prefix}[{self.tag} #{ticket}] {req.subject}"
            parent = ack_message_id or req.message_id
            refs = f"{req.message_id} {ack_message_id}" if ack_message_id else req.message_id
        else:
            subject = f"Re: {req.subject}"
            parent, refs = req.message_id, req.message_id
        fresh = rng.choice(REPLY_TEXT_RU if req.russian else REPLY_TEXT_EN)
        quoted = req.text[: rng.randint(1000, 3000)]
        intro = (
            f"{formatdate()}, {self.desk}:"
            if req.russian
            else f"On {formatdate()}, {self.desk} wrote:"
        )
        text = fresh + "\n\n" + intro + "\n" + "\n".join("> " + ln for ln in quoted.split("\n"))
        headers = [
            f"From: {_address(req.name, req.sender, req.charset)}",
            f"To: {self.desk}",
            f"Subject: {_encode_words(subject, req.charset)}",
            f"Date: {formatdate()}",
            f"Message-ID: {msgid}",
            f"In-Reply-To: {parent}",
            f"References: {refs}",
            "X-Mailer: maild-bench",
        ]
        raw = self._assemble(headers, text, req.charset, attachment, serial)
        return Outgoing(
            msgid,
            req.sender,
            self.desk,
            raw,
            "reply",
            ticket is not None,
            attachment,
            req.message_id,
        )
