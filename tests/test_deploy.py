"""deploy/: the compose file's own services, run as the processes its containers would run.

No container runtime runs here, so the compose file is read (PyYAML) and each service's
entrypoint, command and environment run as subprocesses of this checkout (the image's
/app): every path a container sees in a volume or a mounted file maps into a temporary
directory (`Containers`; a named volume is one directory whichever service mounts it), the
compose file's Milvus to `milvus-lite server` on loopback, Telegram to the fake Bot API.
What processes cannot show (restart policies, log limits, the user, the health check, the
build context) is checked on the files themselves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from helpers import launch_argv

from index.backends.milvus import MilvusBackend
from loopback.fake_telegram import FakeBotAPIServer, FakeTelegram, Payloads, parse_html
from loopback.news_site import PBOC, SICHUAN, SICHUAN_TITLE, SITE, NewsSite
from settings import PROJECT_ROOT, load_config

DEPLOY = PROJECT_ROOT / "deploy"
WORKDIR = PurePosixPath("/app")  # the image's WORKDIR: this checkout
TOKEN = "12345:TEST_ONLY_not_a_real_token_abc"
ADMIN = 4242
WAIT = 120.0  # generous: a broken deployment fails instead of hanging
# An article from each way in, and the question it answers (with the fact the answer quotes).
ASKED = {
    "default corpus": ("断卡行动打掉了多少个犯罪团伙？", "170余个"),
    "/add in Telegram": ("四川要求什么时候前完成虚拟货币挖矿项目的甄别清理？", "6月20日前完成"),
    "indexer add URL": ("约谈要求银行和支付机构不得为虚拟货币相关活动提供哪些服务？", "账户开立"),
    "indexer add file": ("犯罪嫌疑人刘某收购他人银行卡多少张？", "二十余张"),
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}` from `env`."""

    def sub(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if env.get(name):
            return env[name]
        assert op != "?", f"the compose file needs {name}: {arg}"
        return arg if op == "-" else ""

    return _VARIABLE.sub(sub, value)


def with_settings(text: str, section: str, values: dict[str, Any]) -> str:
    """TOML `text` with `values` set in `[section]` (replacing those keys; JSON scalars and lists
    are TOML values)."""
    lines = text.splitlines()
    header = f"[{section}]"
    new = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    if header not in lines:
        return "\n".join([*lines, header, *new]) + "\n"
    start = lines.index(header) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    kept = [line for line in lines[start:end] if line.split("=")[0].strip() not in values]
    return "\n".join([*lines[:start], *new, *kept, *lines[end:]]) + "\n"


def image_content(target: PurePosixPath) -> Path | None:
    """What the image holds at `target` (from the Dockerfile's COPY lines), if anything."""
    for line in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if not line.startswith("COPY "):
            continue
        *sources, dest = line.split()[1:]
        for source in sources:
            at = WORKDIR / dest / source if len(sources) > 1 or dest.endswith("/") else WORKDIR / dest
            if target.is_relative_to(at):
                return PROJECT_ROOT / source / target.relative_to(at)
    return None


class Containers:
    """The services' filesystems under `root`: container path /X is root/X for every volume
    and mounted file. A new named volume starts as the image's content at its mount point, as
    Docker fills it; the code itself runs from this checkout (the image's WORKDIR)."""

    def __init__(self, root: Path, services: dict[str, Any], files: dict[str, str]) -> None:
        self.root = root
        self.services = services
        self.volumes: dict[str, PurePosixPath] = {}
        for name in services:
            for source, target in self.mounts(name).items():
                if source.startswith((".", "/")):  # a file or directory beside the compose file
                    host = self.host(target)
                    host.parent.mkdir(parents=True, exist_ok=True)
                    host.write_text(files.get(source) or (DEPLOY / source).read_text(encoding="utf-8"))
                    continue
                assert self.volumes.setdefault(source, target) == target, f"{source} mounted at two paths"
                seed = image_content(target)
                if seed is not None and not self.host(target).exists():
                    shutil.copytree(seed, self.host(target))
                self.host(target).mkdir(parents=True, exist_ok=True)

    def mounts(self, service: str) -> dict[str, PurePosixPath]:
        """source → container path of each of the service's volumes."""
        out = {}
        for entry in self.services[service].get("volumes", []):
            source, target, *_ = entry.split(":")
            out[source] = PurePosixPath(target)
        return out

    def host(self, container_path: PurePosixPath | str) -> Path:
        return self.root / str(container_path).lstrip("/")

    def argv(self, service: str, command: list[str] | None = None) -> list[str]:
        """The service's entrypoint + command (`run SERVICE ARGS…` replaces the command), its
        `python` the tests' launcher (the fake embedder registered)."""
        spec = self.services[service]
        argv = [*spec.get("entrypoint", []), *(command if command is not None else spec["command"])]
        return [part for arg in argv for part in (launch_argv() if arg == "python" else [arg])]

    def env(self, service: str, host_env: dict[str, str]) -> dict[str, str]:
        """The service's environment, interpolated from `host_env`, container paths mapped."""
        spec = self.services[service]["environment"]
        out = {}
        for name, value in spec.items():
            value = interpolate(str(value), host_env)
            out[name] = str(self.host(value)) if value.startswith(str(WORKDIR) + "/") else value
        return out

    def start(
        self, service: str, host_env: dict[str, str], overrides: dict[str, str], command: list[str] | None = None
    ) -> Service:
        """`docker compose up SERVICE`, or `run --rm SERVICE COMMAND…` with `command`."""
        env = {k: v for k, v in os.environ.items() if k not in self.services[service]["environment"]}
        env |= self.env(service, host_env) | overrides | {"PYTHONUNBUFFERED": "1"}
        log = self.root.parent / f"{service}-{time.monotonic_ns()}.log"
        with log.open("w", encoding="utf-8") as out:
            process = subprocess.Popen(
                self.argv(service, command), cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        return Service(process, log)


class Service:
    """A running service's process and its log (stdout and stderr, as `docker logs` shows)."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def running(self) -> bool:
        return self.process.poll() is None

    def finish(self, timeout: float = WAIT, sig: int | None = None) -> tuple[int, str]:
        """(exit status, output) once it exits (after `sig`, if given); killed if it hangs."""
        if sig is not None and self.running():
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.process.returncode, self.output()


@pytest.fixture
def server() -> Iterator[FakeBotAPIServer]:
    with FakeBotAPIServer(FakeTelegram(TOKEN)) as running:
        yield running


def test_the_bot_and_the_indexer_add_into_one_corpus_one_catalog_one_milvus(
    tmp_path: Path, lite_server: str, site: NewsSite, server: FakeBotAPIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot (its first build, then /add from an admin in Telegram) and the indexer (`add
    FILE`, `add URL`, `build`, overlapping the bot's builds) run from the compose file;
    afterwards the bot answers from every article added either way, and Milvus holds
    exactly the shared catalog."""
    services = compose()["services"]
    config_text = (DEPLOY / "config.toml").read_text(encoding="utf-8")
    # What a test needs: the fake embedder, quick reloads, the loopback news site allowed.
    config_text = with_settings(config_text, "model", {"name": "test-hash"})
    config_text = with_settings(config_text, "telegram", {"reload_seconds": 0.5, "health_listen": "127.0.0.1:0"})
    config_text = with_settings(config_text, "ingest", {"allow_hosts": ["127.0.0.1"]})
    world = Containers(tmp_path / "containers", services, {"./config.toml": config_text})
    host_env = {"TELEGRAM_BOT_TOKEN": TOKEN, "QA_ADMINS": str(ADMIN)}
    overrides = {"MILVUS_URI": lite_server, "TELEGRAM_BASE_URL": server.base_url}
    shutil.copy(SITE / "otc-cards.html", tmp_path / "otc-cards.html")  # `run -v "$PWD:/import:ro" …`
    api, p = server.api, Payloads()

    bot = world.start("bot", host_env, overrides)
    try:
        adds = [world.start("indexer", host_env, overrides, ["add", str(tmp_path / "otc-cards.html")])]
        api.push(p.message(f"/add {site.url(SICHUAN)}", chat_id=ADMIN, lang="en"))
        adds += [
            world.start("indexer", host_env, overrides, ["add", site.url(PBOC)]),
            world.start("indexer", host_env, overrides),  # the service's own command: build
        ]
        for add in adds:
            status, output = add.finish()
            assert status == 0, output[-3000:]
        # The status message's final edit (the new version is live: built by this add, or by an
        # indexer run that took the lock first and found the article already in the corpus).
        done = f"Added: {SICHUAN_TITLE} (2021-06-19)"
        assert api.wait_for(lambda: any(done in text for text in chat_texts(api, ADMIN)), WAIT), bot.output()

        for chat, (question, fact) in enumerate(ASKED.values(), start=1):
            deadline = time.monotonic() + WAIT
            while not any(fact in text for text in chat_texts(api, chat)):  # served once the bot reloads
                assert time.monotonic() < deadline and bot.running(), (question, bot.output()[-3000:])
                seen = len(chat_texts(api, chat))
                api.push(p.message(question, chat_id=chat))
                api.wait_for(lambda c=chat, n=seen: len(chat_texts(api, c)) > n, 10.0)
    finally:
        status, output = bot.finish(30.0, signal.SIGTERM)
    assert status == 0, output[-3000:]

    monkeypatch.setenv("MILVUS_URI", lite_server)
    config = load_config(world.host(services["bot"]["environment"]["QA_CONFIG"]))
    with MilvusBackend(config) as backend:
        version, problems = backend.check()  # Milvus shows exactly the shared catalog's live version
        assert problems == [] and version
        reader = backend.open_reader()
        try:
            articles = {a["title"] for a in reader.articles()}
        finally:
            reader.close()
    assert len(articles) == len(ASKED) == len(list(Path(config.corpus.dir).rglob("*.md")))


def chat_texts(api: FakeTelegram, chat_id: int) -> list[str]:
    return [
        parse_html(str(c.params["text"])).text
        for c in api.recorded()
        if c.method in ("sendMessage", "editMessageText") and c.params.get("chat_id") == str(chat_id)
    ]


# ---------------------------------------------------------------- the files themselves
def test_the_bot_and_the_indexer_share_the_config_the_corpus_and_the_catalog(tmp_path: Path) -> None:
    """Both read the mounted config through QA_CONFIG, and the corpus and catalog directories
    it names lie in named volumes both mount: one corpus, one catalog (with its build lock and
    identity), whichever service writes. The state directory is in a volume of the bot's own."""
    services = compose()["services"]
    world = Containers(tmp_path, services, {})
    volumes = {name: world.mounts(name) for name in ("bot", "indexer")}
    for name, mounts in volumes.items():
        config_file = services[name]["environment"]["QA_CONFIG"]
        assert mounts["./config.toml"] == PurePosixPath(config_file), name
    config = load_config(world.host(services["bot"]["environment"]["QA_CONFIG"]))

    def volume_of(service: str, path: Path) -> str:
        inside = PurePosixPath("/") / path.resolve().relative_to(tmp_path.resolve()).as_posix()
        holding = [
            (len(target.parts), source) for source, target in volumes[service].items() if inside.is_relative_to(target)
        ]
        assert holding, f"{service} sees {inside} in no volume: what it writes there is lost with the container"
        return max(holding)[1]

    for path in (config.corpus.dir, config.index.dir):
        assert volume_of("bot", path) == volume_of("indexer", path) in compose()["volumes"]
    state = volume_of("bot", config.telegram.state_dir)
    assert state in compose()["volumes"] and state not in volumes["indexer"]
    assert state not in (volume_of("bot", config.index.dir), volume_of("bot", config.corpus.dir))


def test_every_service_restarts_and_caps_its_logs() -> None:
    for name, service in compose()["services"].items():
        one_off = "tools" in service.get("profiles", [])
        assert service["restart"] == ("no" if one_off else "unless-stopped"), name
        logging = service["logging"]
        assert logging["driver"] == "json-file" and {"max-size", "max-file"} <= set(logging["options"]), name


def test_the_image_runs_unprivileged_with_a_health_check_and_a_small_context() -> None:
    lines = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ").splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    [check] = [line for line in lines if line.startswith("HEALTHCHECK ")]
    argv = json.loads(check.split(" CMD ", 1)[1])
    assert argv[:2] == ["python", "-c"] and "/healthz" in argv[2]
    ignore = [line for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignore[0] == "*"  # nothing enters the build context unless listed
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {source for line in lines if line.startswith("COPY ") for source in line.split()[1:-1]}
    assert copied <= allowed
    assert not allowed & {"var", ".venv", ".git", "tests", "bench", ".pytest_cache"}
