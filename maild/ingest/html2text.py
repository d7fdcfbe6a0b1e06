"""Plain text from an HTML body, in linear time (display and quoting, not fidelity).

libxml2's HTML parser (lxml) reads the part: C, one pass, and it stops at 256 levels of
nesting, where text after that point is lost. That is fine for a hostile mail (the raw
message is kept) and never reached by real mail. Python's ``html.parser`` is quadratic on
unclosed tags (24 KB of ``<a `` took 3 s) and nh3/html5ever and lexbor on deep nesting
(150,000 nested ``<div>``: minutes and 38 s); see ``bench/html_nesting.py``.
"""

from __future__ import annotations

import logging
import re

import lxml.etree
import lxml.html

log = logging.getLogger(__name__)

_BLOCK = frozenset(
    {
        "p",
        "div",
        "br",
        "li",
        "tr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "blockquote",
        "table",
        "ul",
        "ol",
        "pre",
        "hr",
    }
)
_SKIP = frozenset({"script", "style", "head", "title"})
_VOID = frozenset({"br", "hr"})  # one line break, not one for each end
# Tags without the "<" of another in them: a fallback strip that stays linear.
_TAG = re.compile(r"<[^<>]*>?")
_PARSER = lxml.html.HTMLParser(
    encoding="utf-8", recover=True, no_network=True, remove_comments=True, remove_pis=True
)


def html_to_text(html: str) -> str:
    """The text of an HTML body: blocks become line breaks, scripts and styles go."""
    if not html.strip():
        return ""
    data = html.encode("utf-8", "replace")
    try:
        doc = lxml.html.document_fromstring(data, parser=_PARSER)
    except (lxml.etree.ParserError, ValueError):  # nothing but comments, or no markup at all
        return _tidy(_TAG.sub(" ", html))
    return _tidy("".join(_walk(doc)))


def _walk(doc: lxml.html.HtmlElement) -> list[str]:
    """The text of the tree in document order, iteratively (no recursion, however deep)."""
    out: list[str] = []
    skip = 0
    for event, el in lxml.etree.iterwalk(doc, events=("start", "end")):
        tag = el.tag if isinstance(el.tag, str) else ""
        if event == "start":
            if tag in _SKIP:
                skip += 1
            elif tag in _BLOCK:
                out.append("\n")
            if not skip and el.text and tag:
                out.append(el.text)
            continue
        if tag in _SKIP:
            skip -= 1
        elif tag in _BLOCK and tag not in _VOID:
            out.append("\n")
        if not skip and el.tail:
            out.append(el.tail)
    return out


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t\xa0]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
