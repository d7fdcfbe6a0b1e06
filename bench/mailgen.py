"""Synthetic but realistic customer mail for the benchmark: raw RFC 5322 bytes, CRLF line ends.

Everything here is cheap on purpose (the client shares the machine with the daemon): bodies are
assembled from pre-encoded paragraphs, the 100 KB attachment from one random block with a
unique prefix (so every attachment has its own content hash, as in real life).
"""

from __future__ import annotations

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
ATTACHMENT_BYTES = 100 * 1024
_BLOCK = os.urandom(ATTACHMENT_BYTES)


@dataclass
class Request:
    """A new request the benchmark sent; replies come from the same person."""

    message_id: str
    sender: str
    name: str
    subject: str
    russian: bool
    charset: str
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


def _encode_words(text: str, charset: str) -> str:
    return Header(text, charset).encode(linesep=CRLF)


def _address(name: str, addr: str, charset: str) -> str:
    return f"{_encode_words(name, charset)} <{addr}>"


def _body_text(rng: random.Random, russian: bool, target: int) -> str:
    paras = PARAS_RU if russian else PARAS_EN
    out: list[str] = []
    size = 0
    while size < target:
        p = rng.choice(paras)
        out.append(p)
        size += len(p.encode("utf-8")) + 2
    return "\n\n".join(out)


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

    def __init__(self, run: str, desk_address: str, tag: str, seed: int = 1) -> None:
        self.run = run
        self.desk = desk_address
        self.tag = tag
        self.rng = random.Random(seed)
        self.serial = 0

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
        subject = rng.choice(SUBJECTS_RU if russian else SUBJECTS_EN)
        name = rng.choice(NAMES_RU if russian else NAMES_EN)
        sender = f"customer-{self.run}-{serial}@client.example.org"
        text = _body_text(rng, russian, rng.randint(1500, 5000))
        headers = [
            f"From: {_address(name, sender, charset)}",
            f"To: {self.desk}",
            f"Subject: {_encode_words(subject, charset)}",
            f"Date: {formatdate()}",
            f"Message-ID: {msgid}",
            "X-Mailer: maild-bench",
        ]
        raw = self._assemble(headers, text, charset, attachment, serial)
        req = Request(msgid, sender, name, subject, russian, charset)
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
        quoted = _body_text(rng, req.russian, rng.randint(1000, 3000))
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
