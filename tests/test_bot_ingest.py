"""/add from Telegram: the real Application over the recording fake Bot API, articles from the
loopback news site or sent as documents, through to answers citing them."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import chat_texts, copy_index, write_config

from loopback.fake_telegram import Call, InProcessBot, Payloads, parse_html, run_bot
from loopback.news_site import SICHUAN, SICHUAN_TITLE, SITE, NewsSite
from settings import PROJECT_ROOT, Config, load_config
from telegram_bot.i18n import t

ADMIN = 4242
SICHUAN_QUESTION = "四川要求什么时候前完成虚拟货币挖矿项目的甄别清理？"
os.environ.setdefault("PTB_TIMEDELTA", "1")


@pytest.fixture
def config(default_index: Config, tmp_path: Path) -> Config:
    """A copy of the default index that admins add articles to."""
    copy = copy_index(default_index, tmp_path)
    base = load_config(write_config(tmp_path / "config.toml", corpus=copy.corpus.dir, index=copy.index.dir))
    return replace(
        base,
        telegram=replace(base.telegram, admins=(ADMIN,), reload_seconds=0.0),
        ingest=replace(base.ingest, timeout=2.0, download_seconds=5.0, allow_hosts=("127.0.0.1",)),
    )


def test_admin_adds_a_page_by_url_and_the_bot_answers_from_it(site: NewsSite, config: Config) -> None:
    answers: list[Call] = []

    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        await bot.feed(p.message(f"/add {site.url(SICHUAN)}", chat_id=ADMIN, lang="en"))
        answers.extend(await bot.feed(p.message(SICHUAN_QUESTION, chat_id=ADMIN)))

    api = run_bot(config, scenario)
    seen = chat_texts(api.calls, ADMIN)
    assert seen[0] == t("en", "add_started")  # acknowledged at once
    final = seen[-2]  # the last edit of the status message, before the answer
    assert f"Added: {SICHUAN_TITLE} (2021-06-19)" in final and "passages" in final
    assert "Now answering from index version" in final
    edits = [c for c in api.calls if c.method == "editMessageText" and c.ok]
    assert {c.params["message_id"] for c in edits} == {str(api.recorded("sendMessage")[0].result["message_id"])}
    added = list(Path(config.corpus.dir).rglob("*.md"))
    # Fetched from 127.0.0.1: the page's canonical link to news.example.cn is not believed.
    assert any(f"url: {site.url(SICHUAN)}" in path.read_text(encoding="utf-8") for path in added)
    [answer] = [c for c in answers if c.method == "sendMessage"]
    html = answer.params["text"]
    assert "6月20日前完成" in parse_html(html).text
    assert SICHUAN_TITLE in html and "2021-06-19" in html and site.url(SICHUAN) in html  # cited: title, date, link


def test_a_document_with_the_caption_add_is_added(config: Config) -> None:
    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        bot.api.files["doc-1"] = (SITE / "sichuan-mining.html").read_bytes()
        await bot.feed(p.document("doc-1", "sichuan.html", caption="/add", chat_id=ADMIN))

    api = run_bot(config, scenario)
    final = chat_texts(api.calls, ADMIN)[-1]
    assert f"已添加：{SICHUAN_TITLE}（2021-06-19）" in final and "现在使用索引版本" in final
    assert not list((Path(config.index.dir) / "uploads").iterdir())  # the upload is not kept


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        (lambda p: p.message("/add", chat_id=ADMIN), "add_usage"),
        (lambda p: p.message("/add ftp://example.org/x", chat_id=ADMIN), "add_usage"),
        (lambda p: p.document("doc-2", "report.pdf", caption="/add", chat_id=ADMIN), "add_bad_type"),
        (lambda p: p.document("doc-3", "big.html", caption="/add", chat_id=ADMIN, size=10**9), "add_too_large"),
    ],
)
def test_what_cannot_be_added_gets_one_clear_line(config: Config, payload, key: str) -> None:  # type: ignore[no-untyped-def]
    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        await bot.feed(payload(p))

    api = run_bot(config, scenario)
    [line] = chat_texts(api.calls, ADMIN)
    assert line == t("zh", key, limit=f"{config.ingest.max_bytes:,}")
    assert not api.recorded("getFile")


def test_non_admins_are_refused_politely_and_nothing_is_fetched(site: NewsSite, config: Config) -> None:
    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        await bot.feed(p.message(f"/add {site.url(SICHUAN)}", chat_id=77))

    api = run_bot(config, scenario)
    assert chat_texts(api.calls, 77) == [t("zh", "admins_only")]
    assert sorted(p.name for p in Path(config.corpus.dir).rglob("*.md")) == sorted(
        p.name for p in (PROJECT_ROOT / "corpus" / "articles").glob("*.md")
    )


def test_adds_run_one_at_a_time_and_bad_sources_are_reported(site: NewsSite, config: Config) -> None:
    async def scenario(bot: InProcessBot, p: Payloads) -> None:
        await asyncio.gather(
            bot.feed(p.message(f"/add {site.url(SICHUAN)}", chat_id=ADMIN)),
            bot.feed(p.message(f"/add {site.url('/missing.html')}", chat_id=ADMIN + 1, user_id=ADMIN)),
        )

    api = run_bot(config, scenario)
    first, second = chat_texts(api.calls, ADMIN), chat_texts(api.calls, ADMIN + 1)
    assert {first[0], second[0]} == {t("zh", "add_started"), t("zh", "add_queued")}
    assert "已添加" in first[-1]
    assert second[-1].startswith("已跳过：") and "404" in second[-1]
