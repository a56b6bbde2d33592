"""Configuration: `config.toml` into frozen dataclasses, and broken files or a missing index
reported by both CLIs as one clear line (no traceback, non-zero exit)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from helpers import write_config, write_toml

from settings import DEFAULT_CONFIG, PROJECT_ROOT, Config, ConfigError, load_config, with_overrides

# ---------------------------------------------------------------- load_config


def test_committed_config_loads_with_documented_defaults(monkeypatch):
    monkeypatch.delenv("QA_INDEX_DIR", raising=False)
    monkeypatch.delenv("TELEGRAM_BASE_URL", raising=False)
    config = load_config()
    assert config.path == DEFAULT_CONFIG
    # Relative paths in the file are resolved against the file's directory.
    assert config.corpus.dir.is_absolute() and config.corpus.dir.is_relative_to(PROJECT_ROOT)
    assert config.corpus.dir.is_dir()
    assert config.index.dir.is_absolute()
    assert config.model.name.strip()
    assert 1 <= config.retrieval.k <= config.retrieval.max_k
    assert config.corpus.min_chars < config.corpus.max_chars
    assert isinstance(config.telegram.allowlist, tuple)
    # auto: exact search below 50k passages, IVF above (bench/README.md)
    assert (config.index.faiss, config.index.ivf_threshold, config.index.ivf_nprobe) == ("auto", 50_000, 0)
    assert config.ingest == Config().ingest  # config.toml states the built-in defaults
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.retrieval.k = 10  # type: ignore[misc]


def test_partial_file_keeps_defaults_and_resolves_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("QA_INDEX_DIR", raising=False)
    path = write_toml(
        tmp_path / "config.toml",
        '[corpus]\ndir = "articles"\n[index]\ndir = "/srv/qa/index"\nkeep_versions = 5\n'
        "[retrieval]\ndense_weight = 1\n[telegram]\nallowlist = [1, -1002]\n",
    )
    config = load_config(path)
    assert config.corpus.dir == tmp_path / "articles"  # relative to the file, not the cwd
    assert config.index.dir == Path("/srv/qa/index")
    assert config.index.keep_versions == 5 and config.index.faiss == "auto"
    assert config.retrieval.dense_weight == 1.0 and isinstance(config.retrieval.dense_weight, float)
    assert config.telegram.allowlist == (1, -1002)
    assert config.model == Config().model


@pytest.mark.parametrize("kind", ["auto", "flat", "ivf", "hnsw"])
def test_every_faiss_kind_is_accepted(tmp_path, kind):
    config = load_config(write_toml(tmp_path / "config.toml", f'[index]\nfaiss = "{kind}"\nivf_nprobe = 16\n'))
    assert config.index.faiss == kind and config.index.ivf_nprobe == 16


def test_the_old_name_of_ivf_threshold_is_read_with_one_notice(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="settings"):
        config = load_config(write_toml(tmp_path / "config.toml", "[index]\nhnsw_threshold = 1234\n"))
    assert config.index.ivf_threshold == 1234
    [notice] = [r.getMessage() for r in caplog.records]
    assert "hnsw_threshold is now called ivf_threshold" in notice
    with pytest.raises(ConfigError, match="both hnsw_threshold and ivf_threshold"):
        load_config(write_toml(tmp_path / "config.toml", "[index]\nhnsw_threshold = 1\nivf_threshold = 2\n"))


def test_environment_overrides_deployment_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("QA_INDEX_DIR", str(tmp_path / "env-index"))
    monkeypatch.setenv("TELEGRAM_BASE_URL", "http://127.0.0.1:8081/bot")
    config = load_config(write_toml(tmp_path / "config.toml", '[index]\ndir = "ignored"\n'))
    assert config.index.dir == tmp_path / "env-index"
    assert config.telegram.base_url == "http://127.0.0.1:8081/bot"
    overridden = with_overrides(config, corpus_dir=tmp_path / "c", index_dir=tmp_path / "i")
    assert (overridden.corpus.dir, overridden.index.dir) == (tmp_path / "c", tmp_path / "i")


def test_milvus_uri_is_a_lite_file_beside_the_config_or_a_server_url(tmp_path, monkeypatch):
    """A path means Milvus Lite (relative to the config file), a URL a server; MILVUS_URI
    overrides the file and MILVUS_TOKEN is read only from the environment."""
    config = load_config(
        write_toml(tmp_path / "config.toml", '[index]\nbackend = "milvus"\nmilvus_uri = "data/qa.db"\n')
    )
    assert config.index.backend == "milvus" and config.index.milvus_uri == str(tmp_path / "data" / "qa.db")
    remote = load_config(write_toml(tmp_path / "remote.toml", '[index]\nmilvus_uri = "https://milvus.example:19530"\n'))
    assert remote.index.milvus_uri == "https://milvus.example:19530"
    monkeypatch.setenv("MILVUS_URI", "http://127.0.0.1:19530")
    assert load_config(write_toml(tmp_path / "config.toml", "")).index.milvus_uri == "http://127.0.0.1:19530"
    with pytest.raises(ConfigError, match="unknown key 'milvus_token'"):
        load_config(write_toml(tmp_path / "config.toml", '[index]\nmilvus_token = "root:x"\n'))
    monkeypatch.setenv("MILVUS_TOKEN", "root:x")
    assert Config().milvus_token == "root:x"


def test_the_compose_deployment_config_serves_from_milvus(monkeypatch):
    """deploy/config.toml: the committed defaults with the index in the compose file's Milvus."""
    import yaml

    config = load_config(PROJECT_ROOT / "deploy" / "config.toml")
    assert config.index.backend == "milvus" and config.index.milvus_uri == "http://milvus:19530"
    assert config.corpus.dir.resolve() == (PROJECT_ROOT / "corpus" / "articles").resolve()
    compose = yaml.safe_load((PROJECT_ROOT / "deploy" / "docker-compose.yml").read_text(encoding="utf-8"))
    for service in ("bot", "indexer"):
        environment = compose["services"][service]["environment"]
        assert environment["QA_CONFIG"] == "/app/deploy/config.toml"
        assert environment["MILVUS_URI"] == "http://milvus:19530"


def test_token_comes_only_from_the_environment(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown key 'token'"):
        load_config(write_toml(tmp_path / "config.toml", '[telegram]\ntoken = "123:abc"\n'))
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    assert Config().telegram_token == "123:abc"
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN")
    assert Config().telegram_token is None


BROKEN = {
    "syntax": ("[corpus\nmax_chars = 3\n", "TOML syntax error"),
    "duplicate_key": ("[index]\nkeep_versions = 2\nkeep_versions = 3\n", "TOML syntax error"),
    "string_for_int": ('[corpus]\nmax_chars = "many"\n', "[corpus] max_chars must be an integer"),
    "float_for_int": ("[retrieval]\nk = 2.5\n", "[retrieval] k must be an integer"),
    "bool_for_int": ("[retrieval]\nmax_k = true\n", "[retrieval] max_k must be an integer"),
    "string_for_float": ('[retrieval]\ndense_weight = "half"\n', "[retrieval] dense_weight must be a number"),
    "int_for_string": ("[model]\nname = 3\n", "[model] name must be a string"),
    "int_for_path": ("[index]\ndir = 7\n", "[index] dir must be a non-empty path string"),
    "empty_path": ('[corpus]\ndir = ""\n', "[corpus] dir must be a non-empty path string"),
    "bad_id_list": ('[telegram]\nadmins = [1, "bob"]\n', "[telegram] admins must be a list of integer ids"),
    "negative": ("[index]\nkeep_versions = -1\n", "[index] keep_versions must not be negative"),
    "unknown_key": ('[index]\nfaiss_kind = "flat"\n', "unknown key 'faiss_kind' in [index]"),
    "unknown_section": ('[modle]\nname = "usem3"\n', "unknown section [modle]"),
    "top_level_key": ("k = 3\n", "unknown section [k]"),
    "section_not_table": ("corpus = 3\n", "[corpus] must be a table"),
    "bad_choice": ('[retrieval]\nfusion = "rank"\n', "[retrieval] fusion must be zscore, minmax or rrf"),
    "rrf_k_zero": ("[retrieval]\nrrf_k = 0\n", "[retrieval] rrf_k must be positive"),
    "bad_faiss": ('[index]\nfaiss = "annoy"\n', "[index] faiss must be auto, flat, ivf or hnsw"),
    "negative_nprobe": ("[index]\nivf_nprobe = -1\n", "[index] ivf_nprobe must not be negative"),
    "weight_range": ("[retrieval]\ndense_weight = 1.5\n", "dense_weight must be between 0 and 1"),
    "nan_weight": (
        "[retrieval]\ndense_weight = nan\n",
        "[retrieval] dense_weight must be a non-negative number",
    ),
    "nan_timeout": ("[index]\nlock_timeout = nan\n", "[index] lock_timeout must be a non-negative number"),
    "negative_float": (
        "[telegram]\nrate_window = -1.5\n",
        "[telegram] rate_window must be a non-negative number",
    ),
    "chars": ("[corpus]\nmax_chars = 20\nmin_chars = 10\n", "max_chars must be >= 40"),
    "min_over_max": ("[corpus]\nmax_chars = 100\nmin_chars = 100\n", "greater than min_chars"),
    "k_zero": ("[retrieval]\nk = 0\n", "k and max_k must be at least 1"),
    "no_candidates": ("[retrieval]\ncandidates = 0\n", "[retrieval] candidates and max_query_chars must be at least 1"),
    "hnsw_m": ('[index]\nfaiss = "hnsw"\nhnsw_m = 1\n', "[index] hnsw_m must be at least 2"),
    "batch_zero": ("[model]\nbatch_size = 0\n", "[model] batch_size must be at least 1"),
    "blank_model": ('[model]\nname = "  "\n', "[model] name must not be empty"),
    "zero_cap": (
        "[ingest]\nmax_bytes = 0\n",
        "[ingest] timeout, download_seconds and max_bytes must be greater than 0",
    ),
    "zero_timeout": ("[ingest]\ntimeout = 0\n", "[ingest] timeout, download_seconds and max_bytes must be greater"),
    "blank_agent": ('[ingest]\nuser_agent = ""\n', "[ingest] user_agent must not be empty"),
    "bad_backend": ('[index]\nbackend = "elastic"\n', "[index] backend must be faiss or milvus"),
    "bad_collection": ('[index]\nmilvus_collection = "qa-1"\n', "[index] milvus_collection must be a name"),
    "empty_milvus_uri": ('[index]\nmilvus_uri = " "\n', "[index] milvus_uri must not be empty"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_config_raises_one_message_naming_file_and_problem(tmp_path, case):
    text, problem = BROKEN[case]
    path = write_toml(tmp_path / "config.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert "\n" not in message


def test_missing_or_unreadable_config(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_bytes(b"[model]\nname = '\xff\xfe'\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)  # a directory


# ---------------------------------------------------------------- the CLIs


@pytest.mark.parametrize("case", ["syntax", "string_for_int", "unknown_key"])
def test_cli_reports_a_broken_config_in_one_line(tmp_path, cli, case):
    text, problem = BROKEN[case]
    path = write_toml(tmp_path / "config.toml", text)
    for command in (
        ("index", "build", "--config", str(path), "--index", str(tmp_path / "idx")),
        ("retrieval", "--config", str(path), "断卡行动打掉了多少个犯罪团伙？"),
    ):
        cli(*command).one_clear_error(str(path), problem)
    assert not (tmp_path / "idx").exists()


def test_cli_batch_mode_and_check_report_a_broken_config(tmp_path, cli):
    text, problem = BROKEN["unknown_section"]
    path = write_toml(tmp_path / "config.toml", text)
    for command in (("retrieval", "--config", str(path)), ("index", "check", "--config", str(path))):
        cli(*command).one_clear_error(str(path), problem)


def test_cli_reports_a_missing_config_file(tmp_path, cli):
    missing = tmp_path / "nope.toml"
    for command in (
        ("index", "build", "--config", str(missing)),
        ("retrieval", "--config", str(missing), "q"),
    ):
        cli(*command).one_clear_error(str(missing), "not found")


def test_cli_reports_a_missing_index_with_the_command_to_build_it(tmp_path, cli):
    config = write_toml(tmp_path / "config.toml", '[model]\nname = "test-hash"\n')
    empty = tmp_path / "no-index-here"
    for command in (
        ("retrieval", "--config", str(config), "--index", str(empty), "断卡行动打掉了多少个犯罪团伙？"),
        ("retrieval", "--index", str(empty), "q"),  # the committed config (real model), never loaded
        ("index", "check", "--config", str(config), "--index", str(empty)),
    ):
        cli(*command).one_clear_error(str(empty), "python -m index build")


# ---------------------------------------------------------------- configuration from the environment
def test_qa_config_names_the_file_when_no_path_is_given(tmp_path, monkeypatch):
    chosen = write_toml(tmp_path / "chosen.toml", "[retrieval]\nk = 5\n")
    other = write_toml(tmp_path / "other.toml", "[retrieval]\nk = 2\n")
    monkeypatch.setenv("QA_CONFIG", str(chosen))
    assert load_config().path == chosen and load_config().retrieval.k == 5
    assert load_config(other).retrieval.k == 2  # --config wins
    monkeypatch.setenv("QA_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError) as error:
        load_config()
    assert str(error.value) == f"{tmp_path / 'gone.toml'}: config file not found (from QA_CONFIG)"


def test_every_entry_point_reads_qa_config(default_index, tmp_path, monkeypatch, capsys, bot_main):
    import json

    from index.__main__ import main as index_main
    from retrieval.__main__ import main as retrieval_main

    path = write_config(tmp_path / "deployed.toml", corpus=default_index.corpus.dir, index=default_index.index.dir)
    monkeypatch.setenv("QA_CONFIG", str(path))
    assert index_main(["info"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]
    assert retrieval_main(["--json", "断卡行动打掉了多少个犯罪团伙？"]) == 0
    assert "170余个" in json.loads(capsys.readouterr().out)["results"][0]["text"]
    assert bot_main("stats") == 2  # this config's state directory, which has no state yet
    assert capsys.readouterr().err.startswith(f"error: no bot state at {tmp_path / 'state'}")

    monkeypatch.setenv("QA_CONFIG", str(tmp_path / "gone.toml"))
    for run in (lambda: index_main(["check"]), lambda: retrieval_main(["q"]), lambda: bot_main("--console")):
        assert run() == 2
        captured = capsys.readouterr()
        assert captured.err == f"config error: {tmp_path / 'gone.toml'}: config file not found (from QA_CONFIG)\n"


def test_admins_allowlist_and_state_dir_from_the_environment(tmp_path, monkeypatch):
    text = "[telegram]\nadmins = [1]\nallowlist = [2, 3]\nstate_dir = 'state'\n"
    path = write_toml(tmp_path / "config.toml", text)
    assert load_config(path).telegram.state_dir == tmp_path / "state"  # relative to the file
    monkeypatch.setenv("QA_ADMINS", " 42, 43 ,")
    monkeypatch.setenv("QA_ALLOWLIST", "-1001234567890,7")
    monkeypatch.setenv("QA_STATE_DIR", str(tmp_path / "elsewhere"))
    telegram = load_config(path).telegram
    assert (telegram.admins, telegram.allowlist) == ((42, 43), (-1001234567890, 7))
    assert telegram.state_dir == tmp_path / "elsewhere"
    assert Config().telegram.state_dir == PROJECT_ROOT / "var" / "state"
    monkeypatch.setenv("QA_ADMINS", "")  # set but empty: the file's
    assert load_config(path).telegram.admins == (1,)


@pytest.mark.parametrize("value", ["@alice", "1;2", "1.5", "12 34", "0x10"])
def test_invalid_ids_in_the_environment_are_one_config_error(tmp_path, monkeypatch, capsys, bot_main, value):
    monkeypatch.setenv("QA_ALLOWLIST", value)
    with pytest.raises(ConfigError, match="QA_ALLOWLIST must be comma-separated integer ids"):
        load_config(write_toml(tmp_path / "config.toml", ""))
    monkeypatch.delenv("QA_ALLOWLIST")
    monkeypatch.setenv("QA_ADMINS", value)
    assert bot_main("--console", "--config", str(write_toml(tmp_path / "config.toml", ""))) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"config error: QA_ADMINS must be comma-separated integer ids (e.g. 12345,-100678), got {value!r}\n"
    )
