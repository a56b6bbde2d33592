"""User-facing strings in Chinese and English, and how a user's language is chosen.

Quotes are always the Chinese originals; only the text around them (labels, help, "no
answer") follows the user. The question's script decides when it is clear (a Chinese
question gets Chinese labels even from an English-language client); otherwise the
client's `language_code` decides, and English is the fallback for everything non-Chinese.
"""

from __future__ import annotations

import re
import unicodedata

from index.text import HAN

DEFAULT_LANG = "en"


STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "answer_header": "From the articles (quoted in the original Chinese):",
        "unsure_header": "The closest passages; they may not answer this exactly:",
        "also_in": "also in: ",
        "more_header": "More passages ({start}–{end}):",
        "no_answer": "The articles do not cover this.",
        "weak_header": "Closest passage (weak match — it may not answer your question):",
        "nothing_found": "I found nothing in the articles for that. Try other words, or /help.",
        "no_more": "No more passages for this question.",
        "truncated": "(Your question was shortened to its first {limit} characters.)",
        "help": (
            "I answer questions from {articles} news article(s) about China's 2021 crackdown on "
            "crypto mining, exchanges and OTC trading ({dates}).\n\n"
            "Ask a question in plain words and I reply with the passages that answer it, quoted "
            "in Chinese with the answering sentence in bold and a citation.\n\n"
            'Follow-up questions ("What about Inner Mongolia?", "When?") continue the previous '
            "question for a while; /new starts afresh.\n\n"
            "In groups: mention me, reply to one of my messages, or use /ask <question>. "
            "In any chat: type @{username} and a question.\n\n"
            "Examples:\n{examples}\n\n"
            "/sources — the indexed articles\n/about — index version and model"
        ),
        "help_short": ("Hi! Ask me about the 2021 crypto crackdown in China, e.g.:\n{examples}\n/help for more."),
        "sources_header": "Indexed articles ({count}):",
        "sources_more": "…and {count} more.",
        "sources_outlets": "By outlet: {outlets}",
        "sources_page": "Page {page} of {pages}, newest first:",
        "btn_newer": "‹ Newer",
        "btn_older": "Older ›",
        "passages": "{count} passages",
        "about": (
            "Bot version: {app}\nIndex version: {version}\nModel: {model}\n"
            "Articles: {articles}\nPassages: {passages}\nBuilt: {built_at}\nVector index: {faiss}"
        ),
        "context_header": "Context:",
        "source_header": "Source:",
        "no_link": "(no link available)",
        "btn_more": "More",
        "btn_context": "Context",
        "btn_source": "Source",
        "stale_button": "This button is from an older version of the index. Please ask again.",
        "invalid_button": "This button is no longer valid. Please ask again.",
        "refused": "Sorry, this bot is private.",
        "throttled": "You are asking very fast. Please wait a few seconds before the next question.",
        "error": "Sorry, something went wrong while answering. Please try again in a moment.",
        "reload_done": "Switched to index version {version}.",
        "reload_same": "Already on the newest index ({version}).",
        "reload_failed": "Reload failed; still serving {version}. See the log.",
        "admins_only": "Only the bot's admins can do that.",
        "add_usage": "Usage: /add <article or feed URL>, or send an .html, .md or .txt file with the caption /add.",
        "add_bad_type": "I can add .html, .htm, .md and .txt files (or a URL: /add <url>).",
        "add_too_large": "That file is too large to add (at most {limit} bytes).",
        "add_started": "Adding… I will update this message as I go.",
        "add_queued": "Another add is running; yours comes next. I will update this message.",
        "add_fetching": "Fetching…",
        "add_building": "Building the index: {done}/{total} passages embedded…",
        "add_added": "Added: {title} ({date}), {passages} passages",
        "add_updated": "Updated: {title} ({date}), {passages} passages",
        "add_added_pending": "Added to the corpus: {title}",
        "add_updated_pending": "Updated in the corpus: {title}",
        "add_unchanged": "Unchanged: {source} ({detail})",
        "add_skipped": "Skipped: {source}: {detail}",
        "add_live": "Now answering from index version {version}.",
        "add_build_failed": "The index was not rebuilt: {error}",
        "add_nothing": "Nothing was added.",
        "remove_usage": "Usage: /remove <article URL or id> … (ids as `python -m index info` shows them).",
        "remove_started": "Removing… I will update this message.",
        "remove_queued": "Another add or remove is running; yours comes next. I will update this message.",
        "remove_removed": "Removed: {title} ({path})",
        "remove_unlisted": "No longer listed as a source of {title}: {source}",
        "remove_not_found": "Not found: {source}",
        "remove_nothing": "Nothing was removed.",
        "ask_usage": "Usage: /ask <question>",
        "inline_weak": "Weak match",
        "inline_unsure": "Closest",
        "inline_help": "How to ask",
        "inline_nothing": "Nothing found",
        "understood_as": "Understood as: {question}",
        "new_conversation": "New conversation: the next question is read on its own.",
        "vote_thanks": "Thanks for the feedback!",
        "stats_header": "Statistics, last {days} days (UTC)",
        "stats_per_day": "Questions per day:",
        "stats_none": "No questions in this period.",
        "stats_answered": "Answered: {answered} of {questions} ({answered_share}) · unsure: {unsure} "
        "({unsure_share}) · not covered: {not_covered} ({not_covered_share})",
        "stats_votes": "Votes: 👍 {up} · 👎 {down}",
        "stats_latency": "Time to answer: p50 {p50} ms · p95 {p95} ms",
        "stats_top": "Most frequent questions answered unsure, not covered or with 👎:",
        "stats_top_item": "{rank}. {question} — {times}× (unsure {unsure}, not covered {not_covered}, 👎 {down})",
        "stats_private": "Statistics show other people's questions: send /stats in a private chat with me.",
        "feed_failing": "Watched feed failing: {url}\n{error}\nI keep trying, less often each time, and will tell you "
        "once it works again.",
        "feed_recovered": "Watched feed working again: {url}",
        "feeds_none": "No watched feeds: list them in [ingest] feeds.",
        "feeds_line": "{url}\nlast success: {success} · articles taken: {taken}",
        "feeds_failing": "failing ({failures}× in a row, last at {since}): {error}; next try after {next}",
        "feeds_never": "never",
        "index_building": "The index is being built. Please ask again in a few minutes.",
        "index_rebuilding": "The index is being rebuilt. Please ask again in a few minutes.",
        "rebuilding_note": "(The index is being rebuilt: this answer comes from its previous version.)",
        "index_unavailable": "The index cannot be reached right now. Please try again in a minute.",
    },
    "zh": {
        "answer_header": "文章原文摘录：",
        "unsure_header": "最接近的段落，未必直接回答你的问题：",
        "also_in": "也见于：",
        "more_header": "更多段落（{start}–{end}）：",
        "no_answer": "这些文章没有涉及这个问题。",
        "weak_header": "最接近的段落（弱匹配，未必回答了你的问题）：",
        "nothing_found": "文章中没有找到相关内容。换个说法试试，或发送 /help。",
        "no_more": "这个问题没有更多段落了。",
        "truncated": "（问题过长，只使用了前 {limit} 个字符。）",
        "help": (
            "我根据 {articles} 篇关于 2021 年中国整治虚拟货币挖矿、交易所和 OTC 交易的新闻回答问题"
            "（{dates}）。\n\n"
            "直接提问即可：我会引用回答问题的原文段落，答案句加粗，并附上出处。\n\n"
            "追问（如“内蒙古呢？”“什么时候？”）会接着上一个问题理解；/new 重新开始。\n\n"
            "在群组中：@我、回复我的消息，或使用 /ask 问题。在任何聊天中：输入 @{username} 加问题。\n\n"
            "示例：\n{examples}\n\n"
            "/sources — 已收录的文章\n/about — 索引版本和模型"
        ),
        "help_short": ("你好！可以问我 2021 年中国整治虚拟货币的问题，例如：\n{examples}\n发送 /help 了解更多。"),
        "sources_header": "已收录的文章（{count} 篇）：",
        "sources_more": "……另有 {count} 篇。",
        "sources_outlets": "各来源：{outlets}",
        "sources_page": "第 {page}/{pages} 页，最新的在前：",
        "btn_newer": "‹ 较新",
        "btn_older": "较旧 ›",
        "passages": "{count} 个段落",
        "about": (
            "程序版本：{app}\n索引版本：{version}\n模型：{model}\n"
            "文章：{articles}\n段落：{passages}\n构建时间：{built_at}\n向量索引：{faiss}"
        ),
        "context_header": "上下文：",
        "source_header": "来源：",
        "no_link": "（无链接）",
        "btn_more": "更多",
        "btn_context": "上下文",
        "btn_source": "来源",
        "stale_button": "索引已更新，这个按钮已过期。请重新提问。",
        "invalid_button": "这个按钮已失效。请重新提问。",
        "refused": "抱歉，这个机器人不对外开放。",
        "throttled": "提问太快了，请稍等几秒再问。",
        "error": "抱歉，回答时出了点问题，请稍后再试。",
        "reload_done": "已切换到索引版本 {version}。",
        "reload_same": "已经是最新索引（{version}）。",
        "reload_failed": "重新加载失败，仍在使用 {version}。详见日志。",
        "admins_only": "只有管理员可以执行这个操作。",
        "add_usage": "用法：/add <文章或订阅源网址>，或发送 .html、.md、.txt 文件并附上说明文字 /add。",
        "add_bad_type": "只能添加 .html、.htm、.md 和 .txt 文件（或网址：/add <网址>）。",
        "add_too_large": "文件太大，无法添加（最多 {limit} 字节）。",
        "add_started": "正在添加……进度会更新在这条消息里。",
        "add_queued": "另一个添加任务正在进行，下一个就轮到你。进度会更新在这条消息里。",
        "add_fetching": "正在获取……",
        "add_building": "正在建索引：已嵌入 {done}/{total} 段……",
        "add_added": "已添加：{title}（{date}），{passages} 段",
        "add_updated": "已更新：{title}（{date}），{passages} 段",
        "add_added_pending": "已加入语料：{title}",
        "add_updated_pending": "已在语料中更新：{title}",
        "add_unchanged": "未变化：{source}（{detail}）",
        "add_skipped": "已跳过：{source}：{detail}",
        "add_live": "现在使用索引版本 {version} 回答。",
        "add_build_failed": "索引没有重建：{error}",
        "add_nothing": "没有添加任何内容。",
        "remove_usage": "用法：/remove <文章网址或编号> …（编号即 python -m index info 显示的 id）。",
        "remove_started": "正在删除……结果会更新在这条消息里。",
        "remove_queued": "另一个添加或删除任务正在进行，下一个就轮到你。结果会更新在这条消息里。",
        "remove_removed": "已删除：{title}（{path}）",
        "remove_unlisted": "已不再列为《{title}》的来源：{source}",
        "remove_not_found": "未找到：{source}",
        "remove_nothing": "没有删除任何内容。",
        "ask_usage": "用法：/ask 问题",
        "inline_weak": "弱匹配",
        "inline_unsure": "最接近",
        "inline_help": "如何提问",
        "inline_nothing": "没有找到",
        "understood_as": "理解为：{question}",
        "new_conversation": "已开始新的对话：下一个问题将单独理解。",
        "vote_thanks": "谢谢反馈！",
        "stats_header": "统计：最近 {days} 天（UTC）",
        "stats_per_day": "每日提问：",
        "stats_none": "这段时间没有提问。",
        "stats_answered": (
            "已回答：{answered}/{questions}（{answered_share}）· 未必回答：{unsure}（{unsure_share}）"
            "· 未涉及：{not_covered}（{not_covered_share}）"
        ),
        "stats_votes": "评价：👍 {up} · 👎 {down}",
        "stats_latency": "回答用时：p50 {p50} 毫秒 · p95 {p95} 毫秒",
        "stats_top": "最常见的未必回答、未涉及或被 👎 的问题：",
        "stats_top_item": "{rank}. {question} — {times} 次（未必回答 {unsure}，未涉及 {not_covered}，👎 {down}）",
        "stats_private": "统计包含其他用户的问题：请在与我的私聊中发送 /stats。",
        "feed_failing": "监视的订阅源出错：{url}\n{error}\n我会继续重试（间隔逐次变长），恢复后再通知你。",
        "feed_recovered": "监视的订阅源已恢复：{url}",
        "feeds_none": "没有监视的订阅源：请在 [ingest] feeds 中列出。",
        "feeds_line": "{url}\n上次成功：{success} · 已收录文章：{taken}",
        "feeds_failing": "出错（连续 {failures} 次，最近一次 {since}）：{error}；下次重试不早于 {next}",
        "feeds_never": "从未",
        "index_building": "索引正在建立，请过几分钟再问。",
        "index_rebuilding": "索引正在重建，请过几分钟再问。",
        "rebuilding_note": "（索引正在重建：这个回答来自上一个版本。）",
        "index_unavailable": "暂时无法访问索引，请过一分钟再试。",
    },
}

EXAMPLES: dict[str, tuple[str, ...]] = {
    "zh": (
        "断卡行动打掉了多少个犯罪团伙？",
        "青海省禁止向挖矿项目提供什么？",
        "哪些交易所的关键词被屏蔽了？",
    ),
    "en": (
        "Which exchanges were blocked on Baidu and Weibo?",
        "What did Qinghai order for crypto mining projects?",
        "断卡行动打掉了多少个犯罪团伙？",
    ),
}


def t(lang: str, key: str, **values: object) -> str:
    """The string `key` in `lang` (English when unknown), formatted with `values`."""
    table = STRINGS.get(lang, STRINGS[DEFAULT_LANG])
    text = table.get(key) or STRINGS[DEFAULT_LANG][key]
    return text.format(**values) if values else text


def normalise_lang(language_code: str | None) -> str | None:
    """`zh-hans`, `zh-TW` → zh; any other code → en; None stays None."""
    if not language_code:
        return None
    return "zh" if language_code.lower().startswith("zh") else "en"


def detect_lang(text: str, language_code: str | None = None) -> str:
    """The language to talk to the user in: by script when clear, else by client language."""
    han = len(HAN.findall(text))
    letters = sum(1 for ch in text if ch.isalpha()) - han
    if han and not letters:
        return "zh"
    if letters and not han:
        return "en"
    client = normalise_lang(language_code)
    if client is not None:
        return client
    if han:
        # Mixed script without a client hint: Latin words carry more per character.
        words = len(re.findall(r"[^\W\d_]+", HAN.sub(" ", text)))
        return "zh" if han >= 2 * words else "en"
    return DEFAULT_LANG


_CHITCHAT = {
    # English
    "hi",
    "hello",
    "hey",
    "hiya",
    "howdy",
    "yo",
    "sup",
    "hallo",
    "good morning",
    "good afternoon",
    "good evening",
    "good night",
    "morning",
    "thanks",
    "thank you",
    "thanks a lot",
    "thank you very much",
    "thx",
    "ty",
    "ok",
    "okay",
    "cool",
    "nice",
    "great",
    "bye",
    "goodbye",
    "see you",
    "how are you",
    "how are you doing",
    "whats up",
    "what s up",
    "who are you",
    "what are you",
    "what can you do",
    "help",
    "test",
    "testing",
    "ping",
    "start",
    "hi bot",
    "hello bot",
    "hey bot",
    # Chinese
    "你好",
    "您好",
    "嗨",
    "哈喽",
    "哈啰",
    "哈罗",
    "喂",
    "在吗",
    "在么",
    "在不在",
    "谢谢",
    "多谢",
    "谢了",
    "感谢",
    "好的",
    "好",
    "嗯",
    "嗯嗯",
    "哦",
    "再见",
    "拜拜",
    "早",
    "早上好",
    "中午好",
    "下午好",
    "晚上好",
    "晚安",
    "你是谁",
    "你能做什么",
    "你会什么",
    "测试",
    "大家好",
}
_PARTICLES = re.compile(r"[啊呀呢吧哈嘛哦喔啦]+$")
_FILLER_WORDS = {"there", "bot", "everyone", "all", "guys", "again", "so", "much"}


def is_chitchat(text: str) -> bool:
    """Greetings, thanks and other small talk that deserve the help text, not a quote.

    Also true for messages with no words at all (emoji, punctuation, stickers-as-text).
    """
    folded = unicodedata.normalize("NFKC", text).lower()
    if not any(ch.isalpha() for ch in folded):
        return True
    words = re.sub(r"[\W_]+", " ", folded).split()
    core = " ".join(w for w in words if w not in _FILLER_WORDS) or " ".join(words)
    core = _PARTICLES.sub("", core.replace(" ", "")) if HAN.search(core) else core
    return core in _CHITCHAT
