"""The answer pipeline shared by Telegram and the console: question in, `Reply` out.

Every decision about *what* to say lives here (truncation, small talk, answered or weak
match, paging); `telegram_bot.render` only decides *how* it looks. Retrieval is blocking,
so it runs in worker threads; questions that arrive together are answered in one batch
through the one follow-up path (`retrieval.conversation.answer_turns`: every question with
its conversation's earlier ones), which keeps a burst of questions from many chats fast.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from index import overview
from index.backends import open_backend
from index.build import BuildReport
from retrieval import Answer, Confidence, Hit, PassageRow, Retriever
from retrieval.conversation import ConversationStore, Rewritten, answer_turns
from settings import Config
from telegram_bot.i18n import is_chitchat

log = logging.getLogger("telegram_bot.pipeline")


class Kind(StrEnum):
    ANSWER = "answer"  # the articles answer it: up to `max_passages` quotes
    UNSURE = "unsure"  # the closest passages, quoted under a caveat: they may not answer it exactly
    WEAK = "weak"  # not covered: say so, show at most the closest passage
    NOTHING = "nothing"  # no passage at all
    NO_MORE = "no_more"  # "More" pressed past the last result
    HELP = "help"  # small talk or an empty question: the short help text


# Replies that quote passages as an answer (sure or not).
QUOTED = (Kind.ANSWER, Kind.UNSURE)


@dataclass(frozen=True)
class Reply:
    """What to tell the user; rendering decides only how it looks.

    `question` is the question as searched, so "More" pages of a follow-up continue it;
    `understood_as` is that question when it was read in the conversation's context (shown,
    so the user can correct it), else None.
    """

    kind: Kind
    lang: str
    question: str = ""
    hits: tuple[Hit, ...] = ()
    offset: int = 0
    has_more: bool = False
    truncated: bool = False
    version: str = ""
    understood_as: str | None = None
    rebuilding: bool = False  # answered from the old index while a rebuild runs (said so)


@dataclass(frozen=True)
class Library:
    """What /help, /sources and /about show, read once per index version (articles newest first)."""

    version: str
    articles: tuple[dict[str, Any], ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dates(self) -> str:
        dates = sorted(str(a.get("date") or "") for a in self.articles if a.get("date"))
        if not dates:
            return "?"
        return dates[0] if dates[0] == dates[-1] else f"{dates[0]} – {dates[-1]}"


def version_tag(version: str) -> str:
    """8 hex characters naming an index version in callback data (64-byte limit)."""
    return hashlib.sha1(version.encode("utf-8")).hexdigest()[:8]


Turn = tuple[Sequence[str], str]  # (the conversation's earlier resolved questions, the question)
Answered = tuple[Answer, Rewritten]


class AnswerBatcher:
    """Answers conversation turns in batches: while a batch is being answered, newcomers queue
    up and go together in the next one. An idle service answers a lone question at once."""

    def __init__(
        self,
        answer_turns: Callable[[Sequence[Turn], int], list[Answered]],
        *,
        workers: int = 2,
        max_batch: int = 32,
    ) -> None:
        self._answer_turns = answer_turns
        self._workers = workers
        self._max_batch = max_batch
        self._pending: list[tuple[Turn, int, asyncio.Future[Answered]]] = []
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def answer(self, turn: Turn, k: int) -> Answered:
        future: asyncio.Future[Answered] = asyncio.get_running_loop().create_future()
        self._pending.append((turn, k, future))
        if self._running < self._workers:
            self._running += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                k = self._pending[0][1]
                batch = [item for item in self._pending if item[1] == k][: self._max_batch]
                taken = {id(item) for item in batch}
                self._pending = [item for item in self._pending if id(item) not in taken]
                batch = [item for item in batch if not item[2].done()]  # callers that gave up
                if not batch:
                    continue
                try:
                    answers = await asyncio.to_thread(self._answer_turns, [turn for turn, _, _ in batch], k)
                except Exception as exc:
                    if len(batch) == 1:
                        _settle(batch[0][2], exc)
                        continue
                    # One bad question must not fail the others: answer them one by one.
                    for turn, _, future in batch:
                        try:
                            [answer] = await asyncio.to_thread(self._answer_turns, [turn], k)
                        except Exception as single:
                            _settle(future, single)
                        else:
                            _settle(future, answer)
                else:
                    for (_, _, future), answer in zip(batch, answers, strict=True):
                        _settle(future, answer)
        finally:
            self._running -= 1


def _settle(future: asyncio.Future[Answered], outcome: Answered | BaseException) -> None:
    """Deliver a result or an error, unless the caller already gave up."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class QAService:
    """The loaded retriever plus everything the front ends ask of it, all non-blocking."""

    def __init__(self, retriever: Retriever, config: Config, *, stand_in: bool = False) -> None:
        self.retriever = retriever
        self.config = config
        self.stand_in = stand_in  # the old index, answering until a rebuild is live
        self.page_size = max(1, config.telegram.max_passages)
        limit = config.telegram.max_question_chars
        self._batcher = AnswerBatcher(lambda turns, k: answer_turns(retriever.answer_many, turns, k, max_chars=limit))
        self.conversations = ConversationStore(
            idle_seconds=config.conversation.idle_minutes * 60,
            max_conversations=config.conversation.max_conversations,
        )
        self._library: Library | None = None
        self._refresh_lock = asyncio.Lock()

    @classmethod
    async def open(cls, config: Config, *, warm_up: bool = True, stand_in: bool = False) -> QAService:
        """Open the live index and load the model (in a thread: it takes seconds)."""
        retriever = await asyncio.to_thread(Retriever.open, config.index.dir, config)
        if warm_up:
            try:
                await asyncio.to_thread(retriever.warm_up)
            except BaseException:
                retriever.close()
                raise
        return cls(retriever, config, stand_in=stand_in)

    async def close(self) -> None:
        await asyncio.to_thread(self.retriever.close)

    @property
    def version(self) -> str:
        return self.retriever.version

    @property
    def version_tag(self) -> str:
        return version_tag(self.retriever.version)

    # ---------- questions ----------
    async def ask(self, text: str, lang: str, offset: int = 0, *, conversation: Hashable | None = None) -> Reply:
        """Answer one question; `offset` > 0 is the "More" page starting at that rank.

        With a `conversation` key (the caller's: e.g. (chat, user)), a follow-up is answered as
        the question it continues (`retrieval.conversation`) and the question is recorded as
        that conversation's latest; "More" pages (offset > 0) never touch the conversation.
        """
        question = " ".join(text.split())
        limit = self.config.telegram.max_question_chars
        truncated = limit > 0 and len(question) > limit
        if truncated:
            question = question[:limit]
        if not question or is_chitchat(question):
            return Reply(
                Kind.HELP, lang, question=question, truncated=truncated, version=self.version, rebuilding=self.stand_in
            )
        max_k = self.config.retrieval.max_k
        offset = max(0, min(offset, max_k))
        k = min(offset + self.page_size + 1, max_k)  # one extra tells whether "More" has anything
        # (A question cut to max_question_chars stands on its own; `truncated` reports its length.)
        in_context = conversation is not None and not offset and not truncated
        previous = self.conversations.turns(conversation) if in_context else ()
        answer, searched = await self._batcher.answer((previous, question), k)
        if conversation is not None and not offset:
            self.conversations.add(conversation, searched.text)
        common = {
            "lang": lang,
            "question": searched.text,
            "truncated": truncated,
            "version": answer.version,
            "understood_as": searched.text if searched.used_context else None,
            "rebuilding": self.stand_in,
        }
        if not answer.hits:
            return Reply(Kind.NOTHING, **common)
        if not answer.answered:
            if offset:
                return Reply(Kind.NO_MORE, offset=offset, **common)
            return Reply(Kind.WEAK, hits=answer.hits[:1], **common)
        page = answer.hits[offset : offset + self.page_size]
        if not page:
            return Reply(Kind.NO_MORE, offset=offset, **common)
        end = offset + len(page)
        has_more = len(answer.hits) > end and end < max_k
        kind = Kind.UNSURE if answer.confidence is Confidence.UNSURE else Kind.ANSWER
        return Reply(kind, hits=tuple(page), offset=offset, has_more=has_more, **common)

    def conversation_for(self, chat_id: int, user_id: int, replied_to: int | None = None) -> Hashable:
        """The conversation a message continues: that of the bot answer it replies to (linked
        by `answered_in`), else its sender's in this chat (a private chat: the user's)."""
        if replied_to is not None:
            key = self.conversations.conversation_of((chat_id, replied_to))
            if key is not None:
                return key
        return (chat_id, user_id)

    def answered_in(self, chat_id: int, message_id: int, conversation: Hashable) -> None:
        """Record that the bot's message `message_id` answered in `conversation`, so a reply
        to it continues that conversation."""
        self.conversations.link((chat_id, message_id), conversation)

    # ---------- browsing ----------
    async def context(self, passage_id: int) -> list[PassageRow]:
        return await asyncio.to_thread(self.retriever.context, passage_id, 1, 1)

    async def passage(self, passage_id: int) -> PassageRow | None:
        rows = await asyncio.to_thread(self.retriever.passages, [passage_id])
        return rows.get(passage_id)

    async def library(self) -> Library:
        """Articles and index metadata, cached until the index version changes."""
        library = self._library
        if library is None or library.version != self.retriever.version:
            version = self.retriever.version
            articles = await asyncio.to_thread(self.retriever.articles)
            library = Library(version, tuple(overview.newest_first(articles)), self.retriever.meta)
            self._library = library
        return library

    async def refresh(self) -> bool:
        """Switch to a newly published index version; questions in flight finish on the old one."""
        async with self._refresh_lock:
            changed = await asyncio.to_thread(self.retriever.refresh)
        if changed:
            log.info("switched to index version %s", self.retriever.version)
        return changed


def ensure_index(config: Config, progress: Callable[[int, int], None] | None = None) -> BuildReport | None:
    """Build the index from the configured corpus when none is published yet (blocking).

    Returns the build report, or None when an index already exists.
    """
    with open_backend(config) as backend:
        if backend.stamp() is not None:
            return None
        log.info("no index (%s backend): building it from %s", backend.name, config.corpus.dir)
    return rebuild_index(config, progress)


def rebuild_index(config: Config, progress: Callable[[int, int], None] | None = None) -> BuildReport:
    """Bring the index up to date with the corpus, waiting for a build another process runs
    (blocking); rebuilds from scratch what the live version cannot serve (another model, schema)."""
    with open_backend(config) as backend:
        report = backend.build(
            progress=progress,
            on_wait=lambda: log.info("another build is running; waiting for it to finish"),
        )
    log.info("index built: %s", report.summary())
    return report
