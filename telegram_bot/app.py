"""The bot's `Application`: the only place that knows PTB's builder.

Every update first passes the admission gate (handler group -1), then the handlers in
`telegram_bot.components`. Services are opened in `post_init` and closed in `post_shutdown`;
HTML is the default parse mode and link previews are off unless a handler asks for one.
"""

from __future__ import annotations

import asyncio
import logging

from telegram import BotCommand, LinkPreviewOptions, Update
from telegram.constants import ParseMode
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    Defaults,
    InlineQueryHandler,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import BaseRequest

from settings import Config
from telegram_bot.components.callbacks import on_button
from telegram_bot.components.commands import cmd_about, cmd_help, cmd_new, cmd_reload, cmd_sources
from telegram_bot.components.errors import on_error
from telegram_bot.components.feeds import cmd_feeds, poll_feeds
from telegram_bot.components.ingest import cmd_add
from telegram_bot.components.inline import on_inline
from telegram_bot.components.questions import cmd_ask, on_group_text, on_private_text
from telegram_bot.components.remove import cmd_remove
from telegram_bot.components.retention import schedule_purge
from telegram_bot.components.stats import cmd_stats
from telegram_bot.gate import admit
from telegram_bot.ratelimit import RetryingRateLimiter
from telegram_bot.state import CONTEXT_TYPES, STATE_KEY, BotState

log = logging.getLogger("telegram_bot")

ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY, Update.INLINE_QUERY]
COMMANDS = {
    "en": [
        ("ask", "Ask a question (in groups)"),
        ("new", "Start a new conversation"),
        ("help", "How to ask, example questions"),
        ("sources", "The indexed articles"),
        ("about", "Index version and model"),
    ],
    "zh": [
        ("ask", "提问（群组中使用）"),
        ("new", "开始新的对话"),
        ("help", "使用说明和示例问题"),
        ("sources", "已收录的文章"),
        ("about", "索引版本和模型"),
    ],
}
DEFAULTS = Defaults(parse_mode=ParseMode.HTML, link_preview_options=LinkPreviewOptions(is_disabled=True))


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

    def stop() -> None:
        """Stop running; asked before the application runs (PTB ignores that after post_init),
        ask again until it does."""
        application.stop_running()
        if not application.running:
            asyncio.get_running_loop().call_later(0.2, stop)

    async def post_init(application: Application) -> None:
        st.stop = stop
        await st.open()
        try:
            await _set_commands(application)
        except TelegramError as exc:
            log.warning("could not register the command list: %s", exc)
        log.info("bot @%s ready; logs carry chat ids, message texts only with --debug", application.bot.username)

    async def post_shutdown(application: Application) -> None:
        await st.close()
        log.info("bot stopped")

    builder = (
        ApplicationBuilder()
        .token(token)
        .defaults(DEFAULTS)
        .context_types(CONTEXT_TYPES)
        .concurrent_updates(True)
        .rate_limiter(RetryingRateLimiter())
        .post_init(post_init)
        .post_shutdown(post_shutdown)
    )
    base_url = config.telegram.base_url
    if base_url:
        builder = builder.base_url(base_url)
        if base_url.rstrip("/").endswith("/bot"):  # files (documents sent to /add) live beside it
            builder = builder.base_file_url(base_url.rstrip("/")[: -len("/bot")] + "/file/bot")
    if request is not None:
        builder = builder.request(request).get_updates_request(get_updates_request or request)
    else:
        builder = builder.connect_timeout(10).read_timeout(15).write_timeout(15).pool_timeout(10)
    application = builder.build()
    application.bot_data[STATE_KEY] = st

    application.add_handler(TypeHandler(Update, admit), group=-1)
    message = filters.UpdateType.MESSAGE
    application.add_handler(CommandHandler(["start", "help"], cmd_help, filters=message))
    application.add_handler(CommandHandler("ask", cmd_ask, filters=message))
    application.add_handler(CommandHandler("sources", cmd_sources, filters=message))
    application.add_handler(CommandHandler("about", cmd_about, filters=message))
    application.add_handler(CommandHandler("reload", cmd_reload, filters=message))
    application.add_handler(CommandHandler("new", cmd_new, filters=message))
    application.add_handler(CommandHandler("add", cmd_add, filters=message))
    add_caption = filters.CaptionRegex(r"^/add(@\w+)?(\s|$)")
    application.add_handler(MessageHandler(message & filters.Document.ALL & add_caption, cmd_add))
    application.add_handler(CommandHandler("remove", cmd_remove, filters=message))
    application.add_handler(CommandHandler("stats", cmd_stats, filters=message))
    application.add_handler(CommandHandler("feeds", cmd_feeds, filters=message))
    text = message & filters.TEXT & ~filters.COMMAND
    application.add_handler(MessageHandler(text & filters.ChatType.PRIVATE, on_private_text))
    application.add_handler(MessageHandler(text & filters.ChatType.GROUPS, on_group_text))
    # Unknown commands in private chats get the help text rather than silence.
    application.add_handler(MessageHandler(message & filters.COMMAND & filters.ChatType.PRIVATE, cmd_help))
    application.add_handler(CallbackQueryHandler(on_button))
    application.add_handler(InlineQueryHandler(on_inline))
    application.add_error_handler(on_error)
    schedule_purge(application, config.telegram)
    if config.ingest.feeds:
        if application.job_queue is None:
            log.error("[ingest] feeds are not polled: install python-telegram-bot[job-queue]")
        else:
            interval = config.ingest.poll_minutes * 60
            job_kwargs = {"max_instances": 1, "coalesce": True}
            application.job_queue.run_repeating(poll_feeds, interval, first=1.0, name="feeds", job_kwargs=job_kwargs)
    return application
