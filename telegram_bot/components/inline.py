"""Inline mode: `@bot question` in any chat offers the top passages as results to pick from."""

from __future__ import annotations

import logging

from telegram import InlineQueryResultArticle, InlineQueryResultsButton, InputTextMessageContent, Update
from telegram.error import BadRequest

from telegram_bot import render
from telegram_bot.gate import INLINE_CACHE_SECONDS
from telegram_bot.i18n import detect_lang, t
from telegram_bot.pipeline import Kind, Reply, version_tag
from telegram_bot.sending import markup_error
from telegram_bot.state import BotContext

log = logging.getLogger("telegram_bot")


def _results(reply: Reply, lang: str, *, html: bool) -> list[InlineQueryResultArticle]:
    tag = version_tag(reply.version)
    results = []
    for i, hit in enumerate(reply.hits):
        title = render.clip(hit.sentence or hit.text, 64)
        if reply.kind is Kind.WEAK:
            title = f"{t(lang, 'inline_weak')}: {title}"
        elif reply.kind is Kind.UNSURE:
            title = f"{t(lang, 'inline_unsure')}: {title}"
        doc = render.passage_doc(reply, i)
        content = (
            InputTextMessageContent(render.to_html(doc))
            if html
            else InputTextMessageContent(render.html_to_plain(doc), parse_mode=None)
        )
        results.append(
            InlineQueryResultArticle(
                id=f"{tag}-{hit.passage_id}",
                title=title,
                description=render.clip(hit.citation, 100),
                input_message_content=content,
            )
        )
    return results


async def on_inline(update: Update, context: BotContext) -> None:
    query = update.inline_query
    if query is None:
        return
    text = query.query.strip()
    lang = detect_lang(text, query.from_user.language_code)
    help_button = InlineQueryResultsButton(text=t(lang, "inline_help"), start_parameter="help")
    if not text:
        await query.answer([], cache_time=INLINE_CACHE_SECONDS, is_personal=True, button=help_button)
        return
    reply = await context.state.qa.ask(text, lang)
    results = _results(reply, lang, html=True)
    button = None if results else help_button
    try:
        await query.answer(results, cache_time=INLINE_CACHE_SECONDS, is_personal=True, button=button)
    except BadRequest as exc:
        if not markup_error(exc):
            raise
        log.error(
            "Telegram rejected inline results' HTML (%s) user=%s; sending plain text", exc.message, query.from_user.id
        )
        plain = _results(reply, lang, html=False)
        await query.answer(plain, cache_time=INLINE_CACHE_SECONDS, is_personal=True, button=button)
    log.info(
        "inline user=%s kind=%s results=%d chars=%d", query.from_user.id, reply.kind.value, len(results), len(text)
    )
