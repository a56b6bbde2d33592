"""python-telegram-bot wiring: the Application, its handlers and its one error handler.

`build_application` is the only place that knows PTB's builder; handlers are thin: they
decide whether to answer (chat type, mention, allowlist, flood limit), call the shared
pipeline, and send what `telegram_bot.render` produced. Retrieval is loaded in `post_init`
and closed in `post_shutdown`; a background task switches to newly published index
versions without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from telegram import (
    BotCommand,
    InlineKeyboardMarkup,
    InlineQueryResultArticle,
    InlineQueryResultsButton,
    InputTextMessageContent,
    LinkPreviewOptions,
    Message,
    MessageEntity,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatType, ParseMode
from telegram.error import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    InlineQueryHandler,
    MessageHandler,
    filters,
)
from telegram.request import BaseRequest

from settings import Config
from telegram_bot import render
from telegram_bot.buttons import CONTEXT, MORE, ButtonData, QuestionStore, decode, keyboard
from telegram_bot.guards import Allowlist, FloodGate, Verdict
from telegram_bot.i18n import DEFAULT_LANG, detect_lang, normalise_lang, t
from telegram_bot.pipeline import Kind, QAService, Reply, version_tag

log = logging.getLogger("telegram_bot")

STATE_KEY = "crackdown_qa_state"
INLINE_CACHE_SECONDS = 30
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY, Update.INLINE_QUERY]
COMMANDS = {
    "en": [
        ("ask", "Ask a question (in groups)"),
        ("help", "How to ask, example questions"),
        ("sources", "The indexed articles"),
        ("about", "Index version and model"),
    ],
    "zh": [
        ("ask", "提问（群组中使用）"),
        ("help", "使用说明和示例问题"),
        ("sources", "已收录的文章"),
        ("about", "索引版本和模型"),
    ],
}
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


def app_version() -> str:
    try:
        return metadata.version("crackdown-qa")
    except metadata.PackageNotFoundError:
        return "dev"


@dataclass
class BotState:
    """Everything the handlers share; the service exists between post_init and post_shutdown."""

    config: Config
    warm_up: bool = True
    service: QAService | None = None
    allowlist: Allowlist = field(init=False)
    flood: FloodGate = field(init=False)
    inline_flood: FloodGate = field(init=False)
    questions: QuestionStore | None = None
    watcher: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        tg = self.config.telegram
        self.allowlist = Allowlist(tg.allowlist)
        self.flood = FloodGate(tg.user_rate, tg.rate_window)
        # Inline queries arrive while the user types: a separate, roomier budget.
        self.inline_flood = FloodGate(tg.user_rate * 3, tg.rate_window)

    @property
    def qa(self) -> QAService:
        if self.service is None:
            raise RuntimeError("the QA service is not running")
        return self.service

    @property
    def question_store(self) -> QuestionStore:
        if self.questions is None:
            raise RuntimeError("the question store is not open")
        return self.questions


def state(context: ContextTypes.DEFAULT_TYPE) -> BotState:
    value = context.bot_data.get(STATE_KEY)
    if not isinstance(value, BotState):
        raise RuntimeError("bot state missing: build the app with build_application()")
    return value


# ---------------------------------------------------------------- rate limiting and retries
class RetryingRateLimiter(AIORateLimiter):
    """PTB's AIORateLimiter (flood limits, 429 retry_after) plus retries with exponential
    backoff for transient network faults: 5xx, timeouts, connection resets. Client errors
    (400, 403) are not retried: they would fail the same way again."""

    def __init__(self, *, network_retries: int = 4, backoff: float = 0.25, retry_after_retries: int = 3) -> None:
        super().__init__(max_retries=retry_after_retries)
        self.network_retries = network_retries
        self.backoff = backoff

    async def process_request(
        self,
        callback: Callable[..., Awaitable[Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Any:
        delay = self.backoff
        for attempt in range(self.network_retries + 1):
            try:
                return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)
            except BadRequest:
                raise
            except NetworkError as exc:  # includes TimedOut; RetryAfter is handled by the parent
                if attempt >= self.network_retries:
                    raise
                log.warning(
                    "%s failed (%s: %s) chat=%s; retry %d/%d in %.2fs",
                    endpoint,
                    type(exc).__name__,
                    exc,
                    data.get("chat_id"),
                    attempt + 1,
                    self.network_retries,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")


# ---------------------------------------------------------------- sending
def _markup_error(exc: BadRequest) -> bool:
    text = exc.message.lower()
    return any(k in text for k in ("parse entities", "entity", "too long", "url", "tag"))


async def send_doc(
    context: ContextTypes.DEFAULT_TYPE,
    chat_id: int,
    doc: render.Doc,
    *,
    markup: InlineKeyboardMarkup | None = None,
    reply_to: int | None = None,
    preview: bool = False,
) -> Message:
    """Send a rendered doc as HTML; if Telegram still rejects the markup, as plain text."""
    kwargs: dict[str, Any] = {
        "reply_markup": markup,
        "link_preview_options": None if preview else _NO_PREVIEW,
        "reply_parameters": ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None,
    }
    try:
        return await context.bot.send_message(chat_id, render.to_html(doc), parse_mode=ParseMode.HTML, **kwargs)
    except BadRequest as exc:
        if not _markup_error(exc):
            raise
        log.error("Telegram rejected a reply's HTML (%s) chat=%s; sending it as plain text", exc.message, chat_id)
        return await context.bot.send_message(chat_id, render.html_to_plain(doc), **kwargs)


def _reply_to(update: Update) -> int | None:
    """Quote the asking message in groups; in private chats the answer simply follows."""
    chat = update.effective_chat
    message = update.effective_message
    if chat is None or message is None or chat.type == ChatType.PRIVATE:
        return None
    return message.message_id


def _ids(update: Update) -> tuple[int | None, int | None]:
    user = update.effective_user
    chat = update.effective_chat
    return (user.id if user else None), (chat.id if chat else None)


def _client_lang(update: Update) -> str:
    user = update.effective_user
    return normalise_lang(user.language_code if user else None) or DEFAULT_LANG


async def _admit(update: Update, context: ContextTypes.DEFAULT_TYPE, *, question: bool) -> bool:
    """Allowlist first (one polite refusal), then the per-user flood limit for questions."""
    st = state(context)
    user_id, chat_id = _ids(update)
    verdict = st.allowlist.check(user_id, chat_id)
    if verdict is Verdict.NOTICE and chat_id is not None:
        log.info("refused chat=%s user=%s (not in allowlist)", chat_id, user_id)
        await send_doc(context, chat_id, render.text_doc(_client_lang(update), "refused"), reply_to=_reply_to(update))
    if verdict is not Verdict.ALLOW:
        return False
    if not question:
        return True
    verdict = st.flood.check(user_id)
    if verdict is Verdict.NOTICE and chat_id is not None:
        log.info("throttled chat=%s user=%s", chat_id, user_id)
        await send_doc(context, chat_id, render.text_doc(_client_lang(update), "throttled"), reply_to=_reply_to(update))
    return verdict is Verdict.ALLOW


# ---------------------------------------------------------------- questions
async def answer_question(update: Update, context: ContextTypes.DEFAULT_TYPE, text: str) -> None:
    """The one path every question takes: admit, retrieve, render, send."""
    chat = update.effective_chat
    if chat is None or not await _admit(update, context, question=True):
        return
    st = state(context)
    user = update.effective_user
    lang = detect_lang(text, user.language_code if user else None)
    reply = await st.qa.ask(text, lang)
    token = await asyncio.to_thread(st.question_store.put, reply.question, lang) if reply.has_more else None
    markup = keyboard(reply, version_tag(reply.version), token)
    await send_doc(context, chat.id, render.answer_doc(reply), markup=markup, reply_to=_reply_to(update))
    log.info(
        "answered chat=%s user=%s kind=%s passages=%d chars=%d lang=%s",
        chat.id,
        user.id if user else None,
        reply.kind.value,
        len(reply.hits),
        len(text),
        lang,
    )
    log.debug("question chat=%s text=%r", chat.id, text)


def addressed_text(message: Message, username: str, bot_id: int) -> tuple[str, bool]:
    """(text without the bot's @mentions, whether the message is addressed to the bot).

    Addressed = mentions the bot (entity or plain "@name") or replies to one of its messages.
    Entity offsets are UTF-16, so the text is cut in UTF-16.
    """
    text = message.text or ""
    addressed = False
    spans: list[MessageEntity] = []
    for entity in message.entities or ():
        if (
            entity.type == MessageEntity.MENTION and message.parse_entity(entity).lower() == f"@{username}".lower()
        ) or (entity.type == MessageEntity.TEXT_MENTION and entity.user is not None and entity.user.id == bot_id):
            spans.append(entity)
    if spans:
        addressed = True
        encoded = text.encode("utf-16-le")
        for entity in sorted(spans, key=lambda e: e.offset, reverse=True):
            encoded = encoded[: 2 * entity.offset] + encoded[2 * (entity.offset + entity.length) :]
        text = encoded.decode("utf-16-le", errors="replace")
    if username:
        lowered = text.lower()
        needle = f"@{username}".lower()
        while needle in lowered:
            at = lowered.index(needle)
            text = text[:at] + text[at + len(needle) :]
            lowered = text.lower()
            addressed = True
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == bot_id:
        addressed = True
    return " ".join(text.split()), addressed


async def on_private_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Private chats: every text message is a question (except our own inline results)."""
    message = update.effective_message
    if message is None or message.text is None:
        return
    if message.via_bot is not None and message.via_bot.id == context.bot.id:
        return
    await answer_question(update, context, message.text)


async def on_group_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Groups: only messages that mention the bot or reply to it; everything else is silence."""
    message = update.effective_message
    if message is None or message.text is None:
        return
    text, addressed = addressed_text(message, context.bot.username or "", context.bot.id)
    if addressed:
        await answer_question(update, context, text)


async def cmd_ask(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/ask <question>, anywhere; as a reply to a message, /ask alone asks that message."""
    message = update.effective_message
    chat = update.effective_chat
    if message is None or chat is None:
        return
    parts = (message.text or "").split(maxsplit=1)
    text = parts[1] if len(parts) > 1 else ""
    if not text.strip() and message.reply_to_message is not None:
        text = message.reply_to_message.text or ""
    if not text.strip():
        if await _admit(update, context, question=False):
            await send_doc(
                context,
                chat.id,
                render.text_doc(_client_lang(update), "ask_usage"),
                reply_to=_reply_to(update),
            )
        return
    await answer_question(update, context, text)


# ---------------------------------------------------------------- commands
async def cmd_help(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/start and /help: what the bot knows, how to ask, examples."""
    chat = update.effective_chat
    if chat is None or not await _admit(update, context, question=False):
        return
    library = await state(context).qa.library()
    doc = render.help_doc(_client_lang(update), library, context.bot.username or "")
    await send_doc(context, chat.id, doc, reply_to=_reply_to(update))


async def cmd_sources(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    chat = update.effective_chat
    if chat is None or not await _admit(update, context, question=False):
        return
    library = await state(context).qa.library()
    await send_doc(context, chat.id, render.sources_doc(_client_lang(update), library), reply_to=_reply_to(update))


async def cmd_about(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    chat = update.effective_chat
    if chat is None or not await _admit(update, context, question=False):
        return
    library = await state(context).qa.library()
    doc = render.about_doc(_client_lang(update), library, app_version())
    await send_doc(context, chat.id, doc, reply_to=_reply_to(update))


async def cmd_reload(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/reload (admins): switch to a newly published index now instead of at the next check."""
    chat = update.effective_chat
    user_id, chat_id = _ids(update)
    if chat is None or not await _admit(update, context, question=False):
        return
    st = state(context)
    lang = _client_lang(update)
    if user_id not in st.config.telegram.admins:
        log.info("refused /reload chat=%s user=%s (not an admin)", chat_id, user_id)
        await send_doc(context, chat.id, render.text_doc(lang, "admins_only"), reply_to=_reply_to(update))
        return
    try:
        changed = await st.qa.refresh()
    except Exception:
        log.exception("reload failed (requested by user=%s)", user_id)
        doc = render.text_doc(lang, "reload_failed", version=st.qa.version)
    else:
        doc = render.text_doc(lang, "reload_done" if changed else "reload_same", version=st.qa.version)
        log.info("reload by user=%s: %s", user_id, "switched" if changed else "unchanged")
    await send_doc(context, chat.id, doc, reply_to=_reply_to(update))


async def on_other_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Unknown commands in private chats get the help text rather than silence."""
    await cmd_help(update, context)


# ---------------------------------------------------------------- buttons
async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """More / Context / Source. Old, stale or forged buttons get a polite popup."""
    query = update.callback_query
    if query is None:
        return
    st = state(context)
    client = normalise_lang(query.from_user.language_code) or DEFAULT_LANG
    user_id, chat_id = _ids(update)
    if not st.allowlist.allows(user_id, chat_id):
        await query.answer(t(client, "refused"))
        return
    data = decode(query.data)
    if data is None:
        log.info("invalid button chat=%s user=%s", chat_id, user_id)
        await query.answer(t(client, "invalid_button"))
        return
    qa = st.qa
    if data.action == MORE:
        await _more(update, context, data, client)
        return
    if data.vtag != qa.version_tag:
        log.info("stale button chat=%s user=%s", chat_id, user_id)
        await query.answer(t(data.lang, "stale_button"))
        return
    message = query.message
    if message is None:
        await query.answer(t(data.lang, "invalid_button"))
        return
    if data.action == CONTEXT:
        rows = await qa.context(data.passage_id)
        doc = render.context_doc(data.lang, rows, data.passage_id) if rows else None
    else:
        row = await qa.passage(data.passage_id)
        doc = render.source_doc(data.lang, row) if row is not None else None
    if doc is None:
        await query.answer(t(data.lang, "invalid_button"))
        return
    await query.answer()
    await send_doc(context, message.chat.id, doc, reply_to=message.message_id, preview=data.action != CONTEXT)


async def _more(update: Update, context: ContextTypes.DEFAULT_TYPE, data: ButtonData, client: str) -> None:
    """The next page of results, edited into the same message (or sent anew if that fails).

    After a rebuild the stored question is simply asked again on the new index.
    """
    query = update.callback_query
    assert query is not None
    st = state(context)
    stored = await asyncio.to_thread(st.question_store.get, data.token)
    if stored is None:
        await query.answer(t(client, "stale_button"))
        return
    question, lang = stored
    reply: Reply = await st.qa.ask(question, lang, offset=data.offset)
    if reply.kind is Kind.NO_MORE:  # keep the answer on screen, just say so
        await query.answer(t(lang, "no_more"))
        return
    await query.answer()
    markup = keyboard(reply, version_tag(reply.version), data.token)
    doc = render.answer_doc(reply)
    message = query.message
    try:
        if query.inline_message_id:
            await context.bot.edit_message_text(
                render.to_html(doc),
                inline_message_id=query.inline_message_id,
                parse_mode=ParseMode.HTML,
                reply_markup=markup,
                link_preview_options=_NO_PREVIEW,
            )
            return
        if message is None:
            return
        await context.bot.edit_message_text(
            render.to_html(doc),
            chat_id=message.chat.id,
            message_id=message.message_id,
            parse_mode=ParseMode.HTML,
            reply_markup=markup,
            link_preview_options=_NO_PREVIEW,
        )
    except BadRequest as exc:
        if "not modified" in exc.message.lower() or message is None:
            return
        log.info("could not edit for More (%s) chat=%s; sending a new message", exc.message, message.chat.id)
        await send_doc(context, message.chat.id, doc, markup=markup, reply_to=message.message_id)


# ---------------------------------------------------------------- inline mode
async def on_inline(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """`@bot question` in any chat: the top passages as articles to pick from."""
    query = update.inline_query
    if query is None:
        return
    st = state(context)
    user_id = query.from_user.id
    text = query.query.strip()
    lang = detect_lang(text, query.from_user.language_code)
    help_button = InlineQueryResultsButton(text=t(lang, "inline_help"), start_parameter="help")
    if not st.allowlist.allows(user_id, None) or st.inline_flood.check(user_id) is not Verdict.ALLOW:
        await query.answer([], cache_time=INLINE_CACHE_SECONDS, is_personal=True)
        return
    if not text:
        await query.answer([], cache_time=INLINE_CACHE_SECONDS, is_personal=True, button=help_button)
        return
    reply = await st.qa.ask(text, lang)
    tag = version_tag(reply.version)
    results = []
    for i, hit in enumerate(reply.hits):
        title = render.clip(hit.sentence or hit.text, 64)
        if reply.kind is Kind.WEAK:
            title = f"{t(lang, 'inline_weak')}: {title}"
        html = render.to_html(render.passage_doc(reply, i))
        results.append(
            InlineQueryResultArticle(
                id=f"{tag}-{hit.passage_id}",
                title=title,
                description=render.clip(hit.citation, 100),
                input_message_content=InputTextMessageContent(
                    html, parse_mode=ParseMode.HTML, link_preview_options=_NO_PREVIEW
                ),
            )
        )
    await query.answer(
        results, cache_time=INLINE_CACHE_SECONDS, is_personal=True, button=None if results else help_button
    )
    log.info("inline user=%s kind=%s results=%d chars=%d", user_id, reply.kind.value, len(results), len(text))


# ---------------------------------------------------------------- errors
async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The one error handler: log (no message texts, no token), tell the user briefly,
    never raise. Polling errors (update is None) are retried by PTB itself."""
    error = context.error
    if not isinstance(update, Update):
        if isinstance(error, Conflict):
            log.error("another process is polling with this bot token: %s", error)
        elif isinstance(error, NetworkError | RetryAfter):
            log.warning("Telegram network problem while polling (%s: %s); retrying", type(error).__name__, error)
        else:
            log.error("error outside any update", exc_info=error)
        return
    user_id, chat_id = _ids(update)
    if isinstance(error, Forbidden):
        log.warning("cannot write to chat=%s (%s)", chat_id, error)
        return
    if isinstance(error, NetworkError | RetryAfter | InvalidToken):
        log.error(
            "could not answer update=%s chat=%s user=%s: Telegram request failed after retries: %s: %s",
            update.update_id,
            chat_id,
            user_id,
            type(error).__name__,
            error,
        )
    else:
        log.error(
            "error while answering update=%s chat=%s user=%s",
            update.update_id,
            chat_id,
            user_id,
            exc_info=error,
        )
    lang = _client_lang(update)
    with contextlib.suppress(TelegramError):
        if update.callback_query is not None:
            await update.callback_query.answer(t(lang, "error"))
        elif update.inline_query is not None:
            await update.inline_query.answer([], cache_time=0)
        elif chat_id is not None and update.effective_message is not None:
            await send_doc(context, chat_id, render.text_doc(lang, "error"), reply_to=_reply_to(update))


# ---------------------------------------------------------------- lifecycle
async def _watch_index(st: BotState) -> None:
    """Switch to a newly published index version every `reload_seconds` (0 = off)."""
    interval = st.config.telegram.reload_seconds
    if interval <= 0:
        return
    last_error = ""
    while True:
        await asyncio.sleep(interval)
        try:
            await st.qa.refresh()
            last_error = ""
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            if message != last_error:  # once per distinct problem, not every few seconds
                log.error(
                    "cannot switch to the newly published index (still serving %s): %s",
                    st.qa.version,
                    message,
                )
            last_error = message


async def _set_commands(application: Application) -> None:
    for lang, commands in COMMANDS.items():
        code = None if lang == "en" else lang
        await application.bot.set_my_commands([BotCommand(c, d) for c, d in commands], language_code=code)


def build_application(
    config: Config,
    token: str,
    *,
    request: BaseRequest | None = None,
    get_updates_request: BaseRequest | None = None,
    warm_up: bool = True,
) -> Application:
    """The bot, ready for `run_polling()` (or for tests: initialize + post_init + process_update)."""
    st = BotState(config, warm_up=warm_up)

    async def post_init(application: Application) -> None:
        st.service = await QAService.open(config, warm_up=st.warm_up)
        st.questions = await asyncio.to_thread(QuestionStore.beside_index, config.index.dir)
        library = await st.service.library()
        log.info(
            "serving index %s: %d article(s), %s passages, model %s",
            library.version,
            len(library.articles),
            library.meta.get("passages", "?"),
            library.meta.get("model", "?"),
        )
        try:
            await _set_commands(application)
        except TelegramError as exc:
            log.warning("could not register the command list: %s", exc)
        st.watcher = asyncio.create_task(_watch_index(st))
        log.info("bot @%s ready; logs carry chat ids, message texts only with --debug", application.bot.username)

    async def post_shutdown(application: Application) -> None:
        if st.watcher is not None:
            st.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await st.watcher
            st.watcher = None
        if st.service is not None:
            await st.service.close()
            st.service = None
        if st.questions is not None:
            await asyncio.to_thread(st.questions.close)
            st.questions = None
        log.info("bot stopped")

    builder = (
        ApplicationBuilder()
        .token(token)
        .concurrent_updates(True)
        .rate_limiter(RetryingRateLimiter())
        .post_init(post_init)
        .post_shutdown(post_shutdown)
    )
    if config.telegram.base_url:
        builder = builder.base_url(config.telegram.base_url)
    if request is not None:
        builder = builder.request(request).get_updates_request(get_updates_request or request)
    else:
        builder = builder.connect_timeout(10).read_timeout(15).write_timeout(15).pool_timeout(10)
    application = builder.build()
    application.bot_data[STATE_KEY] = st

    message = filters.UpdateType.MESSAGE
    application.add_handler(CommandHandler(["start", "help"], cmd_help, filters=message))
    application.add_handler(CommandHandler("ask", cmd_ask, filters=message))
    application.add_handler(CommandHandler("sources", cmd_sources, filters=message))
    application.add_handler(CommandHandler("about", cmd_about, filters=message))
    application.add_handler(CommandHandler("reload", cmd_reload, filters=message))
    text = message & filters.TEXT & ~filters.COMMAND
    application.add_handler(MessageHandler(text & filters.ChatType.PRIVATE, on_private_text))
    application.add_handler(MessageHandler(text & filters.ChatType.GROUPS, on_group_text))
    application.add_handler(MessageHandler(message & filters.COMMAND & filters.ChatType.PRIVATE, on_other_command))
    application.add_handler(CallbackQueryHandler(on_button))
    application.add_handler(InlineQueryHandler(on_inline))
    application.add_error_handler(on_error)
    return application
