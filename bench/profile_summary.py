#!/usr/bin/env python3
"""Summarise a py-spy raw profile (``--format raw --threads --idle``), as written by
``bench/throughput.py --profile DIR``: per thread, the share of wall time spent in each function
(inclusive) and at each leaf (self).

    .venv/bin/python bench/profile_summary.py DIR/throughput-worker.txt [--top 30] [--match maild/]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

_LINE = re.compile(r"\s*\(([^()]*):\d+\)$")


def frame_name(frame: str) -> str:
    """'f (maild/x.py:109)' -> 'f (maild/x.py)': one entry a function, not a line."""
    return _LINE.sub(lambda m: f" ({m.group(1)})", frame)


def load(path: Path) -> dict[str, list[tuple[list[str], int]]]:
    threads: dict[str, list[tuple[list[str], int]]] = defaultdict(list)
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = re.sub(r"\s*\(\d+\)", "", frames[0])
        threads[thread].append(([frame_name(f) for f in frames[1:]], int(count)))
    return threads


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--match", default="", help="only list functions whose name contains this")
    p.add_argument("--thread", default="", help="only threads whose name contains this")
    args = p.parse_args()
    threads = load(args.profile)
    grand = sum(c for stacks in threads.values() for _, c in stacks)
    print(f"{args.profile}: {grand} samples")
    for thread, stacks in sorted(threads.items(), key=lambda kv: -sum(c for _, c in kv[1])):
        if args.thread not in thread:
            continue
        total = sum(c for _, c in stacks)
        incl: Counter[str] = Counter()
        leaf: Counter[str] = Counter()
        for frames, c in stacks:
            for f in set(frames):
                incl[f] += c
            if frames:
                leaf[frames[-1]] += c
        print(f"\n== {thread}: {total} samples ({100 * total / grand:.0f} % of the file)")
        print("  inclusive (share of this thread's wall time):")
        shown = 0
        for f, c in incl.most_common():
            if args.match in f:
                print(f"    {100 * c / total:5.1f} %  {f}")
                shown += 1
                if shown >= args.top:
                    break
        print("  self (leaf frames):")
        for f, c in leaf.most_common(min(args.top, 12)):
            print(f"    {100 * c / total:5.1f} %  {f}")


if __name__ == "__main__":
    main()
