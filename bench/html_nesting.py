"""Seconds to parse hostile HTML, old path (html.parser + nh3.clean) against the new one.

    .venv/bin/python bench/html_nesting.py [--sizes 5000,10000,...] [--give-up 60]

For each size n it builds a mail whose HTML part nests ``<div>`` n deep (the 2.9 MB mail of
issue 9 had n = 150,000) and one with n unclosed ``<a b="`` start tags, and times (CPU
seconds) what the parse step did to it before (text by Python's ``html.parser``, then
``nh3.clean`` on every HTML part) and what it does now (``maild.ingest.parse.parse_mail``).
The old path is skipped for larger sizes once one of its runs took longer than --give-up.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from functools import partial
from html.parser import HTMLParser

import nh3

from maild.ingest.parse import parse_mail


class _OldText(HTMLParser):
    """The old html2text, reduced to what costs: one handler call per tag and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []

    def handle_data(self, data: str) -> None:
        self.out.append(data)


def old_path(html: str) -> None:
    parser = _OldText()
    parser.feed(html)
    parser.close()
    re.sub(r"\s+", " ", "".join(parser.out))
    nh3.clean(html)


def nested(n: int) -> str:
    return "<html><body>" + "<div>" * n + "deep" + "</div>" * n + "</body></html>"


def unclosed(n: int) -> str:
    return "<p>before</p>" + '<a b="' * n


def as_mail(html: str) -> bytes:
    return (
        "From: eve@example.org\r\nTo: support@example.com\r\nSubject: deep\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html
    ).encode()


def cpu(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="5000,10000,20000,40000,80000,150000")
    ap.add_argument("--give-up", type=float, default=60.0, help="old path: skip larger sizes")
    args = ap.parse_args()
    print(f"{'shape':<9} {'n':>7} {'bytes':>9} {'old s':>8} {'new s':>8}")
    for name, build in (("nested", nested), ("unclosed", unclosed)):
        old_ok = True
        for n in (int(s) for s in args.sizes.split(",")):
            html = build(n)
            old = cpu(partial(old_path, html)) if old_ok else None
            raw = as_mail(html)
            new = cpu(partial(parse_mail, raw))
            shown = f"{old:8.3f}" if old is not None else f"{'skipped':>8}"
            print(f"{name:<9} {n:>7} {len(raw):>9} {shown} {new:8.3f}", flush=True)
            old_ok = old is not None and old < args.give_up


if __name__ == "__main__":
    main()
