"""What every handler shares: the config, the admission gate and the services opened in
`post_init`, reached as `context.state` through the typed `BotContext`."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from telegram.ext import CallbackContext, ContextTypes, ExtBot

from settings import Config, parse_listen
from telegram_bot.feedback import AnswerLog
from telegram_bot.gate import Gate
from telegram_bot.health import HealthServer
from telegram_bot.pipeline import QAService
from telegram_bot.questionstore import QuestionStore
from telegram_bot.serving import Serving
from telegram_bot.statefile import prepare_state_dir

log = logging.getLogger("telegram_bot")

STATE_KEY = "crackdown_qa_state"
T = TypeVar("T")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_freed_memory() -> bool:
    """Give the heap back to the system after an ingest job (glibc's `malloc_trim`; elsewhere
    nothing, and False). A build in the bot allocates and frees tens of megabytes that glibc
    otherwise keeps: over hours of feed passes the bot's RSS would creep up though nothing is
    held (30 index versions in one process: 822 MB, 747 MB after the trim)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class BotState:
    """The config, the gate, and the services that exist between `open` and `close`."""

    def __init__(self, config: Config, *, warm_up: bool = True) -> None:
        self.config = config
        self.gate = Gate(config.telegram)
        self.changing_corpus = asyncio.Lock()  # one /add or /remove at a time; the others wait their turn
        self.serving = Serving(config, warm_up=warm_up, on_fatal=self._fatal)
        # Why the bot stopped on its own (a first build that cannot run), for `bot.py` to report.
        self.fatal: Exception | None = None
        self.stop: Callable[[], None] = lambda: None  # set by the application: stop running
        self._health: HealthServer | None = None
        self._questions: QuestionStore | None = None
        self._answers: AnswerLog | None = None
        # Adds, removals and feed passes run here, never in the default pool that answering uses; each
        # gets a cancel event (set on close: the job's child process is killed).
        self._ingest_pool: ThreadPoolExecutor | None = None
        self._ingest_jobs: set[threading.Event] = set()

    @property
    def qa(self) -> QAService:
        """The service answering now; raises `NotServingError` while the index is being (re)built."""
        return self.serving.qa

    @property
    def health(self) -> HealthServer | None:
        return self._health

    @property
    def questions(self) -> QuestionStore:
        if self._questions is None:
            raise RuntimeError("the question store is not open")
        return self._questions

    @property
    def answers(self) -> AnswerLog:
        if self._answers is None:
            raise RuntimeError("the answer log is not open")
        return self._answers

    async def open(self) -> None:
        """Start the health endpoint, load the index and model (or start building them), open
        the question store and the answer log."""
        tg = self.config.telegram
        if tg.health_listen:
            self._health = HealthServer(self.serving.health)
            await self._health.start(*parse_listen(tg.health_listen, "[telegram] health_listen"))
        await self.serving.start()
        path = await asyncio.to_thread(prepare_state_dir, tg.state_dir, self.config.index.dir)
        days = tg.question_retention_days
        self._questions = await asyncio.to_thread(QuestionStore, path, retention_days=days)
        self._answers = await asyncio.to_thread(AnswerLog, path, retention_days=days)
        self._ingest_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest")

    async def run_ingest(self, job: Callable[[threading.Event], T]) -> T:
        """Run `job(cancel)` (an add, a removal or a feed pass, blocking) on the ingest thread. If this
        coroutine is cancelled, `cancel` is set and the job is still awaited: the caller's
        lock is released only once the job has really stopped."""
        if self._ingest_pool is None:
            raise RuntimeError("the ingest pool is not running")
        cancel = threading.Event()
        self._ingest_jobs.add(cancel)
        future = asyncio.get_running_loop().run_in_executor(self._ingest_pool, _then_release_memory, job, cancel)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()
            with contextlib.suppress(Exception):
                await future
            raise
        finally:
            self._ingest_jobs.discard(cancel)

    def purge_expired(self) -> None:
        """Delete what is past `question_retention_days` (blocking: SQLite)."""
        for store in (self._questions, self._answers):
            if store is not None:
                store.purge()

    async def close(self) -> None:
        for cancel in list(self._ingest_jobs):
            cancel.set()
        if self._ingest_pool is not None:
            await asyncio.to_thread(self._ingest_pool.shutdown, wait=True, cancel_futures=True)
            self._ingest_pool = None
        await self.serving.close()
        if self._questions is not None:
            await asyncio.to_thread(self._questions.close)
            self._questions = None
        if self._answers is not None:
            await asyncio.to_thread(self._answers.close)
            self._answers = None
        if self._health is not None:
            await self._health.close()
            self._health = None

    def _fatal(self, exc: Exception) -> None:
        self.fatal = exc
        self.stop()


class BotContext(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    """PTB's context plus `.state`, so handlers are typed against our shared state."""

    @property
    def state(self) -> BotState:
        value = self.bot_data.get(STATE_KEY)
        if not isinstance(value, BotState):
            raise RuntimeError("bot state missing: build the app with build_application()")
        return value


CONTEXT_TYPES = ContextTypes(context=BotContext)


def _then_release_memory(job: Callable[[threading.Event], T], cancel: threading.Event) -> T:
    try:
        return job(cancel)
    finally:
        release_freed_memory()
