#!/usr/bin/env python3
"""How much of a real-mail corpus the front doors accept: SMTP, LMTP and `maild deliver`.

``.venv/bin/python bench/corpus_accept.py [--maild PATH] [--corpus DIR]`` starts a throw-away
daemon (``maild run``: temporary folder, SQLite, free ports), offers every message of the
corpus (``../shared/corpus`` by default) once over SMTP as an MTA sends it (CRLF line ends),
once over LMTP, and (``--deliver``) once to ``maild deliver`` on stdin as it lies on disk,
and prints how many each door accepted and why it refused the others. ``--maild`` measures
another checkout (e.g. ``/work/main/.venv/bin/maild``) to compare before and after.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BODIES_ONLY = "zapier-email-reply-parser-BODIES"  # reply bodies, not whole messages


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def corpus_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and BODIES_ONLY not in p.parts and p.name != "README.md"
    )


def write_config(folder: Path, smtp: int, lmtp: int, web: int) -> Path:
    path = folder / "config.toml"
    path.write_text(
        f"""[desk]
name = "Corpus"
address = "support@example.com"
[storage]
url = "sqlite:///{folder}/maild.db"
[smtp]
listen = "127.0.0.1:{smtp}"
[lmtp]
listen = "127.0.0.1:{lmtp}"
[outbound]
url = "maildir:{folder}/outbox"
from = "support@example.com"
[web]
listen = "127.0.0.1:{web}"
base_url = "http://127.0.0.1:{web}"
[security]
secret_key = "corpus-secret-key-0123456789"
[pipeline]
workers = 1
"""
    )
    return path


def crlf(raw: bytes) -> bytes:
    """As an MTA sends it: every line ended by CRLF."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def offer(client: smtplib.SMTP, raw: bytes, lmtp: bool) -> str:
    try:
        refused = client.sendmail("corpus@example.org", ["support@example.com"], raw)
    except smtplib.SMTPResponseException as exc:
        client.rset()
        return f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')[:60]}"
    except smtplib.SMTPRecipientsRefused as exc:
        return f"rcpt {exc.recipients}"
    return "250" if not refused or not lmtp else f"lmtp {refused}"


def deliver(maild: str, config: Path, raw: bytes) -> str:
    proc = subprocess.run(
        [maild, "--config", str(config), "deliver", "-f", "corpus@example.org"],
        input=raw,
        capture_output=True,
        timeout=120,
    )
    return "250" if proc.returncode == 0 else f"exit {proc.returncode} {proc.stderr[:60]!r}"


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            sys.exit(f"maild run exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    sys.exit("maild run did not start listening")


def report(name: str, results: dict[Path, str], total: int) -> None:
    ok = sum(1 for r in results.values() if r == "250")
    print(f"{name}: accepted {ok} of {total}")
    for reason, n in Counter(r for r in results.values() if r != "250").most_common():
        print(f"  refused x{n}: {reason}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maild", default=str(ROOT / ".venv" / "bin" / "maild"))
    default = os.environ.get("MAILD_CORPUS", str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--corpus", default=default, help="default: MAILD_CORPUS or ../shared/corpus")
    ap.add_argument("--deliver", action="store_true", help="also run `maild deliver` per file")
    args = ap.parse_args()
    files = corpus_files(Path(args.corpus))
    with tempfile.TemporaryDirectory(prefix="maild-corpus-") as tmp:
        smtp, lmtp, web = free_port(), free_port(), free_port()
        config = write_config(Path(tmp), smtp, lmtp, web)
        proc = subprocess.Popen(
            [args.maild, "--config", str(config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_listening(smtp, proc)
            doors: dict[str, dict[Path, str]] = {}
            with smtplib.SMTP("127.0.0.1", smtp, timeout=60) as s:
                doors["smtp"] = {p: offer(s, crlf(p.read_bytes()), False) for p in files}
            with smtplib.LMTP("127.0.0.1", lmtp, timeout=60) as s:
                doors["lmtp"] = {p: offer(s, crlf(p.read_bytes()), True) for p in files}
            if args.deliver:  # a process per message: minutes, not seconds
                doors["deliver"] = {p: deliver(args.maild, config, p.read_bytes()) for p in files}
        finally:
            proc.terminate()
            proc.wait(60)
    print(f"{args.maild}: {len(files)} messages from {args.corpus}")
    for name, results in doors.items():
        report(name, results, len(files))
    refused_somewhere = {p for r in doors.values() for p, v in r.items() if v != "250"}
    print(f"refused by at least one door: {len(refused_somewhere)}")


if __name__ == "__main__":
    main()
