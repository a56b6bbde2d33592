"""The index the bot answers from, and building it in the background when there is none it can read.

At start the bot opens the live index. When there is none (a first start) or this program or
config cannot read it (`RebuildRequiredError`: another model, an older schema) the bot does not
exit, which under `restart: unless-stopped` would only loop: it builds in a background thread
(under the usual build lock, so a `python -m index build` already running simply goes first),
answers meanwhile from the old version where that can still be read (after a model change: with
the model the old version was embedded with) and otherwise tells askers that the index is being
built or rebuilt; then it switches to the new version. A build that cannot run at all (no corpus)
while nothing can be served stops the bot with its one-line error; other failures are retried
with backoff while whatever can be served is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from index.backends import OPEN_ERRORS, RebuildRequiredError
from index.build import BuildError
from index.publish import IndexMissingError
from settings import Config
from telegram_bot.pipeline import QAService, rebuild_index
from telegram_bot.watcher import watch_index

log = logging.getLogger("telegram_bot")

STARTING, BUILDING, REBUILDING, SERVING = "starting", "building", "rebuilding", "serving"
RETRY_SECONDS = 30.0  # first wait after a failed background build; doubles up to MAX_RETRY_SECONDS
MAX_RETRY_SECONDS = 900.0

T = TypeVar("T")


class NotServingError(Exception):
    """No index can answer yet: it is being built (`state` "building") or rebuilt ("rebuilding")."""

    def __init__(self, state: str) -> None:
        super().__init__(f"no index to answer from yet ({state})")
        self.state = state


def build_progress() -> Callable[[int, int], None]:
    """Index build progress as log lines, every 10%."""
    last = -1

    def report(done: int, total: int) -> None:
        nonlocal last
        step = done * 10 // max(total, 1)
        if step != last:
            last = step
            log.info("building index: embedded %d/%d passages", done, total)

    return report


def in_daemon_thread(work: Callable[[], T], name: str) -> asyncio.Future[T]:
    """`work()` in a daemon thread, awaited on the loop. Not `asyncio.to_thread`: the executor's
    threads are joined at interpreter exit, so a stop (SIGTERM) would wait for a build of hours;
    a daemon build killed at exit leaves the last good index, like any killed build."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Any, failed: bool) -> None:
        if future.done():
            return
        if failed:
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def run() -> None:
        try:
            outcome, failed = work(), False
        except BaseException as exc:
            outcome, failed = exc, True
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, outcome, failed)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


class Serving:
    """The `QAService` questions go to (None while nothing can answer), the background build that
    replaces it, and what `/healthz` reports."""

    def __init__(self, config: Config, *, warm_up: bool = True, on_fatal: Callable[[Exception], None]) -> None:
        self.config = config
        self.warm_up = warm_up
        self.state = STARTING
        self._on_fatal = on_fatal
        self._qa: QAService | None = None
        self._build: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()  # set once the index answers (or the bot gave up building it)

    @property
    def qa(self) -> QAService:
        if self._qa is None:
            raise NotServingError(REBUILDING if self.state == REBUILDING else BUILDING)
        return self._qa

    @property
    def version(self) -> str:
        return self._qa.version if self._qa is not None else f"none ({self.state})"

    async def start(self) -> None:
        """Open the live index, or start (re)building it in the background; watch for new versions."""
        try:
            self._qa = await QAService.open(self.config, warm_up=self.warm_up)
        except IndexMissingError:
            self.state = BUILDING
            log.info("no index yet: building it from %s in the background", self.config.corpus.dir)
        except RebuildRequiredError as exc:
            self.state = REBUILDING
            log.warning("the index must be rebuilt (%s); rebuilding it in the background", exc)
            self._qa = await self._old_version(exc)
        else:
            self.state = SERVING
            self._ready.set()
            self._log_serving()
        if self.state != SERVING:
            self._build = asyncio.create_task(self._build_until_live())
        self._watcher = asyncio.create_task(watch_index(self, self.config.telegram.reload_seconds))

    async def wait_ready(self) -> None:
        """Until the index answers: at once unless a background build runs (or give up: then
        `qa` still raises `NotServingError`)."""
        await self._ready.wait()

    async def refresh(self) -> bool:
        """Switch to a newly published version (only while serving normally: during a rebuild the
        background build switches when it is done)."""
        if self.state != SERVING or self._qa is None:
            return False
        return await self._qa.refresh()

    async def close(self) -> None:
        for task in (self._watcher, self._build):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watcher = self._build = None
        if self._qa is not None:
            await self._qa.close()
            self._qa = None

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(able to answer, what `/healthz` shows): the version, its age and size, and the state."""
        qa = self._qa
        if qa is None:
            return False, {"state": self.state}
        meta = qa.retriever.meta
        details: dict[str, Any] = {
            "state": SERVING if self.state == SERVING else REBUILDING,
            "version": qa.version,
            "age_seconds": None,
            "articles": meta.get("articles"),
            "passages": qa.retriever.reader.count,
        }
        with contextlib.suppress(TypeError, ValueError):
            details["age_seconds"] = round(time.time() - datetime.fromisoformat(str(meta["built_at"])).timestamp())
        return True, details

    def _log_serving(self) -> None:
        assert self._qa is not None
        meta = self._qa.retriever.meta
        log.info(
            "serving index %s: %s article(s), %d passages, model %s",
            self._qa.version,
            meta.get("articles", "?"),
            self._qa.retriever.reader.count,
            meta.get("model", "?"),
        )

    async def _old_version(self, needed: RebuildRequiredError) -> QAService | None:
        """The live version opened with the model it was embedded with, to answer from until the
        rebuild is live; None when this program cannot read it at all (an older schema)."""
        if needed.model is None:
            log.warning("the old index cannot be read by this version of the program: askers are told to wait")
            return None
        try:
            qa = await QAService.open(replace(self.config, model=needed.model), warm_up=self.warm_up, stand_in=True)
        except Exception as exc:
            log.warning("cannot answer from the old index meanwhile (model %s: %s)", needed.model.name, exc)
            return None
        log.info("answering from the old index %s (model %s) until the rebuild is live", qa.version, needed.model.name)
        return qa

    async def _build_until_live(self) -> None:
        delay = RETRY_SECONDS
        while True:
            failure: Exception | None = None
            try:
                await in_daemon_thread(lambda: rebuild_index(self.config, build_progress()), "index-build")
            except BuildError as exc:
                if self._qa is None:  # no corpus to build from and nothing to serve: the operator must act
                    self._fatal(exc)
                    return
                failure = exc
            except Exception as exc:
                failure = exc
            try:  # also after a failure: another process may have published a version meanwhile
                qa = await QAService.open(self.config, warm_up=self.warm_up)
            except OPEN_ERRORS as exc:
                if failure is None:  # built, and still unreadable: no retry can help
                    self._fatal(exc)
                    return
                log.error(
                    "building the index failed (%s: %s); trying again in %.0f s", type(failure).__name__, failure, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            old, self._qa, self.state = self._qa, qa, SERVING
            self._ready.set()
            self._log_serving()
            if old is not None:
                await old.close()
            return

    def _fatal(self, exc: Exception) -> None:
        log.error("cannot build an index to answer from: %s", exc)
        self._ready.set()
        self._on_fatal(exc)
