"""The knowledge commands: ``maild search WORDS [--json]`` and ``maild kb list|show N|export``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from maild.config import Config
from maild.knowledge.articles import versions
from maild.knowledge.search import search
from maild.store.db import Database
from maild.store.models import KbArticle

log = logging.getLogger(__name__)

EX_OK, EX_USAGE, EX_NOINPUT = 0, 64, 66


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("search", help="full-text search over requests and articles")
    s.add_argument("words", nargs="+")
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--json", action="store_true")
    k = sub.add_parser("kb", help="knowledge-base articles")
    k.add_argument("action", choices=("list", "show", "export"))
    k.add_argument("number", type=int, nargs="?")
    k.add_argument("--json", action="store_true")


def cmd_search(config: Config, args: argparse.Namespace) -> int:
    db = Database(config.storage_url)
    with db.session() as s:
        hits = search(s.connection(), " ".join(args.words), limit=args.limit)
    if args.json:
        _print_json([h.as_json() for h in hits])
        return EX_OK
    for h in hits:
        label = f"#{h.number}" if h.kind == "request" else f"kb {h.number}"
        print(f"{label:<9} {h.score:>9.4g} {h.status:<8} {h.title[:60]}")
        print(f"          {h.snippet}")
    return EX_OK


def _article(a: KbArticle, body: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "number": a.id,
        "title": a.title,
        "internal": a.internal,
        "request": a.ticket_id,
        "author": a.author,
        "version": a.version,
        "created_at": a.created_at.isoformat(),
        "updated_at": a.updated_at.isoformat(),
    }
    if body:
        data["body"] = a.body
    return data


def _show(db: Database, number: int, as_json: bool) -> int:
    with db.session() as s:
        article = s.get(KbArticle, number)
        if article is None:
            print(f"maild: no article {number}", file=sys.stderr)
            return EX_NOINPUT
        data = _article(article)
        data["history"] = [
            {
                "version": v.version,
                "request": v.ticket_id,
                "author": v.author,
                "at": v.created_at.isoformat(),
                "title": v.title,
                "body": v.body,
            }
            for v in versions(s, number)
        ]
    if as_json:
        _print_json(data)
        return EX_OK
    kind = "internal" if data["internal"] else "public"
    print(
        f"{data['number']}. {data['title']} ({kind}, version {data['version']}, "
        f"from #{data['request']})\n\n{data['body']}\n\nhistory:"
    )
    for v in data["history"]:
        print(f"  v{v['version']} {v['at']} {v['author']} #{v['request']}")
    return EX_OK


def cmd_kb(config: Config, args: argparse.Namespace) -> int:
    db = Database(config.storage_url)
    if args.action == "show":
        if args.number is None:
            print("maild: kb show needs an article number", file=sys.stderr)
            return EX_USAGE
        return _show(db, args.number, args.json)
    export = args.action == "export"
    with db.session() as s:
        rows = [_article(a, export) for a in s.scalars(select(KbArticle).order_by(KbArticle.id))]
    if args.json or export:
        _print_json(rows)
        return EX_OK
    for r in rows:
        kind = "internal" if r["internal"] else "public"
        print(
            f"{r['number']:<5} {kind:<8} v{r['version']:<3} #{r['request'] or '-':<6} {r['title']}"
        )
    return EX_OK


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "search": cmd_search,
    "kb": cmd_kb,
}
