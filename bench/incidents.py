"""Cost of mass-incident detection: the time to compare one new request with 10,000 open ones.

    .venv/bin/python bench/incidents.py [--open 10000] [--new 2000]

Fills the index of maild.tickets.incidents with ``--open`` requests of realistic text (a
vocabulary of English and Russian support words, Zipf-like frequencies, 10-40 words each,
some of them alike groups), then times ``--new`` new requests: normalising the subject and
text, finding the alike ones at `[incident] similarity` 0.6, and adding the request. Prints
the mean and p99 per new request in milliseconds.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from maild.tickets.incidents import AlikeIndex, Entry, band_keys, words

_SEED = (
    "login password invoice printer error server portal account payment refund order delivery "
    "access denied forbidden timeout report export import sync mobile app crash update install "
    "license key email mailbox calendar contract price discount shipping tracking address phone "
    "вход пароль счет принтер ошибка сервер портал оплата возврат заказ доставка доступ запрещен "
    "отчет выгрузка синхронизация приложение обновление лицензия почта договор цена скидка адрес"
)
SEED_WORDS = _SEED.split()


STOP_RANKS = 100


def vocabulary(size: int, rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyzабвгдежзиклмнопрстуфхцчшэюя"
    extra = ["".join(rng.choice(letters) for _ in range(rng.randint(4, 10))) for _ in range(size)]
    return SEED_WORDS + extra


def text(vocab: list[str], rng: random.Random) -> tuple[str, str]:
    # Zipf over content words: the commonest words (the, и, please...) are stop words, gone.
    weights = [1.0 / (i + 1 + STOP_RANKS) for i in range(len(vocab))]
    body = rng.choices(vocab, weights, k=rng.randint(10, 40))
    return " ".join(body[:5]), "Hello,\n\n" + " ".join(body) + "\n\n-- \nRegards"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--open", type=int, default=10_000)
    parser.add_argument("--new", type=int, default=2_000)
    args = parser.parse_args()
    rng = random.Random(12)
    vocab = vocabulary(5_000, rng)
    index, now = AlikeIndex(0.6), datetime(2026, 12, 2, 12, tzinfo=UTC)
    opened = [text(vocab, rng) for _ in range(args.open)]
    for n, (subject, body) in enumerate(opened):
        index.add(Entry(n, words(subject, body), now - timedelta(seconds=args.open - n)))
    samples = [text(vocab, rng) for _ in range(args.new)]
    for n in range(0, args.new, 20):  # every 20th is another customer's near-copy of an open one
        subject, body = opened[rng.randrange(args.open)]
        samples[n] = (subject, body.replace("\n\n--", " " + rng.choice(vocab) + "\n\n--"))
    costs, cpu, found = [], [], 0
    for n, (subject, body) in enumerate(samples):
        start, start_cpu = time.perf_counter(), time.process_time()
        mine = words(subject, body)
        keys = band_keys(mine)
        found += len(index.alike(mine, keys))
        index.add(Entry(args.open + n, mine, now), keys)
        costs.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    costs.sort()
    p99 = costs[int(len(costs) * 0.99) - 1]
    print(
        f"{args.open} open requests, {args.new} new: mean {statistics.mean(costs):.3f} ms, "
        f"p99 {p99:.3f} ms, max {costs[-1]:.3f} ms per new request; CPU time mean "
        f"{statistics.mean(cpu):.3f} ms; {found} alike found for {len(range(0, args.new, 20))} "
        "near-copies"
    )


if __name__ == "__main__":
    main()
