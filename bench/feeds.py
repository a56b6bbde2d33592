"""Watched feeds end to end: from an article's publication on a loopback feed to the bot
answering a question from it.

bot.py runs as a real process with the bundled model, against the loopback fake Bot API,
polling one feed on the loopback news site (loopback/news_site.py) every `poll_minutes`. After
the first story is served, each further story is published at a random moment of the poll
interval, and its question is asked (from a new chat each time) until a reply quotes its
answer. Reported per story: publication → the poll that fetched the feed (waiting for the
job queue), that poll → the reply (fetch and read in the child process, embed, publish,
switch, answer), and their sum. Target: one poll interval plus at most 15 s.

    python -m bench.feeds [--poll-minutes 1] [--stories 2]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.perf import PY, ROOT, child_env, log, stop_process

AFTER_POLL_TARGET_S = 15.0


def run(work: Path, *, poll_minutes: float = 1.0, stories: int = 2, seed: int = 7) -> dict[str, Any]:
    from loopback.fake_telegram import FakeBotAPIServer, FakeTelegram, Payloads, parse_html
    from loopback.news_site import STORIES, NewsSite, publish

    token = "12345:BENCH_only_not_a_real_token"
    interval = poll_minutes * 60
    order = [STORIES["neimenggu"], STORIES["yunnan"], STORIES["xinjiang"]][: stories + 1]
    work.mkdir(parents=True, exist_ok=True)
    corpus, index = work / "corpus", work / "index"
    shutil.rmtree(corpus, ignore_errors=True)
    shutil.rmtree(index, ignore_errors=True)
    shutil.copytree(ROOT / "corpus" / "articles", corpus)
    site = NewsSite()
    feed = "/bench/feed.xml"
    publish(site, feed, order[:1])
    config = work / "feeds-config.toml"
    config.write_text(
        f"[index]\ndir = {json.dumps(str(index))}\n[corpus]\ndir = {json.dumps(str(corpus))}\n"
        f'[ingest]\nallow_hosts = ["127.0.0.1"]\nfeeds = [{json.dumps(site.url(feed))}]\n'
        f"poll_minutes = {poll_minutes}\n",
        encoding="utf-8",
    )
    rng = random.Random(seed)
    result: dict[str, Any] = {"poll_interval_s": interval, "stories": []}
    chat = iter(range(10_000, 1_000_000))
    try:
        with FakeBotAPIServer(FakeTelegram(token)) as server, tempfile.TemporaryFile() as out:
            api = server.api
            payloads = Payloads()

            def ask_until_answered(question: str, answer: str, deadline: float) -> float:
                """Ask until a reply quotes `answer`; the time that reply was sent."""
                while time.monotonic() < deadline:
                    chat_id = next(chat)
                    api.push(payloads.message(question, chat_id=chat_id, user_id=chat_id))

                    def replied(chat_id: int = chat_id) -> list[Any]:
                        return [c for c in api.recorded("sendMessage") if c.params.get("chat_id") == str(chat_id)]

                    if api.wait_for(lambda: bool(replied()), 60):
                        reply = replied()[0]
                        if answer in parse_html(reply.params["text"]).text:
                            return reply.at
                    time.sleep(1.0)
                raise RuntimeError(f"no reply quoted {answer!r} in time")

            env = child_env(TELEGRAM_BOT_TOKEN=token, TELEGRAM_BASE_URL=server.base_url)
            started = time.monotonic()
            bot = subprocess.Popen(
                [PY, "bot.py", "--config", str(config)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
            try:
                first = order[0]
                answered = ask_until_answered(first.question, first.answer, started + 900)
                result["start_to_first_story_s"] = round(answered - started, 1)
                log(f"  feeds: first story answered {answered - started:.1f}s after the bot started")
                for number, story in enumerate(order[1:], start=2):
                    time.sleep(rng.uniform(0, interval))
                    published = time.monotonic()
                    publish(site, feed, list(reversed(order[:number])))
                    answered = ask_until_answered(story.question, story.answer, published + interval + 300)
                    polled = next(r.started for r in site.requests if r.path == feed and r.started >= published)
                    row = {
                        "story": story.slug,
                        "publication_to_poll_s": round(polled - published, 1),
                        "poll_to_answer_s": round(answered - polled, 1),
                        "publication_to_answer_s": round(answered - published, 1),
                    }
                    result["stories"].append(row)
                    log(f"  feeds: {row}")
            finally:
                stop_process(bot)
    finally:
        site.close()
    rows = result["stories"]
    result["max_publication_to_answer_s"] = max(r["publication_to_answer_s"] for r in rows)
    result["max_poll_to_answer_s"] = max(r["poll_to_answer_s"] for r in rows)
    result["target_s"] = interval + AFTER_POLL_TARGET_S
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--poll-minutes", type=float, default=1.0)
    parser.add_argument("--stories", type=int, default=2, choices=(1, 2))
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "bench" / "work" / "feeds")
    args = parser.parse_args()
    print(json.dumps(run(args.work, poll_minutes=args.poll_minutes, stories=args.stories), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
