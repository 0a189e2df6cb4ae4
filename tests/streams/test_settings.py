"""The process settings: one typed layer (defaults < file < environment <
flags), one table of every NEXUS_* variable, and no secret shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nexus import cli
from projections.settings import ProjectorSettings
from streams.config_base import ConfigError
from streams.config_validation import parse_config
from streams.settings import FIELDS, Settings, describe, load_settings, variable

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "streams",
    "adapters",
    "ingress",
    "processors",
    "projections",
    "hub",
    "agent",
    "nexus",
    "notebooks",
)
NAME = re.compile(r"\bNEXUS_[A-Z0-9_]*[A-Z0-9]\b")


def _source_names() -> dict[str, str]:
    """Every NEXUS_* name in the source, with one place it occurs."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*")):
            if path.suffix not in (".py", ".ipynb") or not path.is_file():
                continue
            for name in NAME.findall(path.read_text()):
                found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def _table_names() -> set[str]:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    return {m.group(1) for m in re.finditer(r"^\| `(NEXUS_[A-Z0-9_]+)` \|", doc, re.M)}


def test_every_variable_the_code_reads_is_in_the_table_and_every_row_is_read() -> None:
    source, table = _source_names(), _table_names()
    missing = {name: where for name, where in source.items() if name not in table}
    assert not missing, f"NEXUS_* names missing from docs/configuration.md: {missing}"
    stale = table - set(source)
    assert not stale, f"rows of docs/configuration.md no code reads: {sorted(stale)}"
    assert {variable(f) for f in FIELDS} <= table


def _env(tmp_path: Path, file: dict[str, str] | None, **env: str) -> dict[str, str]:
    out = dict(env)
    if file is not None:
        path = tmp_path / "settings.yaml"
        path.write_text("".join(f"{k}: '{v}'\n" for k, v in file.items()))
        out["NEXUS_SETTINGS"] = str(path)
    return out


def test_precedence_defaults_file_environment_flags(tmp_path: Path) -> None:
    file = {"stream_prefix": "FILE", "valkey_prefix": "file:", "gateway_workers": "3", "log_level": "debug"}
    env = _env(tmp_path, file, NEXUS_VALKEY_PREFIX="env:", NEXUS_GATEWAY_WORKERS="5", NEXUS_LOG_LEVEL="")
    s = load_settings({"gateway_workers": 7, "stream_prefix": None}, env=env)
    assert s.nats == "nats://127.0.0.1:4222" and s.home == "~/.nexus"  # defaults
    assert s.stream_prefix == "FILE"  # the file over the default (a flag not given is None)
    assert s.log_level == "DEBUG"  # the file; an empty variable is unset
    assert s.valkey_prefix == "env:"  # the environment over the file
    assert s.gateway_workers == 7  # the flag over the environment and the file
    sources = {name: source for name, _value, source in describe({"gateway_workers": 7}, env=env)}
    assert sources["NEXUS_GATEWAY_WORKERS"] == "flag"
    assert sources["NEXUS_VALKEY_PREFIX"] == "environment"
    assert sources["NEXUS_STREAM_PREFIX"] == f"file {env['NEXUS_SETTINGS']}"
    assert sources["NEXUS_NATS_URL"] == "default"


def test_data_dir_follows_home_unless_set() -> None:
    assert load_settings(env={"NEXUS_HOME": "/srv/nexus"}).data_path == Path("/srv/nexus")
    s = load_settings(env={"NEXUS_HOME": "/srv/nexus", "NEXUS_DATA_DIR": "/var/lib/gw"})
    assert s.data_path == Path("/var/lib/gw") and s.home_path == Path("/srv/nexus")


def test_the_config_file_sits_under_the_settings(tmp_path: Path) -> None:
    """The projector's DuckDB file: the config's projections section, then the
    settings file, the environment and a flag, each over the one before."""
    cfg = parse_config("projections: {duckdb_path: /cfg.duckdb}")
    assert ProjectorSettings.load(env={}, config=cfg).duckdb_path == "/cfg.duckdb"
    env = _env(tmp_path, {"duckdb_path": "/file.duckdb"})
    assert ProjectorSettings.load(env=env, config=cfg).duckdb_path == "/file.duckdb"
    env["NEXUS_DUCKDB_PATH"] = "/env.duckdb"
    assert ProjectorSettings.load(env=env, config=cfg).duckdb_path == "/env.duckdb"
    flagged = ProjectorSettings.load(env=env, config=cfg, flags={"duckdb_path": "/flag.duckdb"})
    assert flagged.duckdb_path == "/flag.duckdb"


@pytest.mark.parametrize(
    ("env", "file", "message"),
    [
        pytest.param(
            {"NEXUS_GATEWAY_WORKERS": "many"}, None, "NEXUS_GATEWAY_WORKERS (environment)", id="int"
        ),
        pytest.param({"NEXUS_GATEWAY_WORKERS": "-1"}, None, "NEXUS_GATEWAY_WORKERS: 0", id="negative"),
        pytest.param({"NEXUS_STREAM_PREFIX": "a.b"}, None, "NEXUS_STREAM_PREFIX: letters", id="prefix"),
        pytest.param({"NEXUS_LOG_LEVEL": "loud"}, None, "NEXUS_LOG_LEVEL: one of", id="log-level"),
        pytest.param({}, {"nats_ulr": "x"}, "unknown setting 'nats_ulr'", id="file-typo"),
        pytest.param({"NEXUS_SETTINGS": "/nonexistent/settings.yaml"}, None, "cannot read", id="no-file"),
    ],
)
def test_bad_settings_name_the_variable(
    env: dict[str, str], file: dict[str, str] | None, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(env=_env(tmp_path, file, **env))


SECRETS = {
    "NEXUS_POSTGRES_DSN": "postgresql://nexus:pg-Secret-1@db.internal:5432/nexus",
    "NEXUS_VALKEY_URL": "rediss://default:vk-Secret-2@valkey.internal:6380/0",
    "NEXUS_NATS_URL": "nats://nats-Token-3@nats.internal:4222",
    "NEXUS_HUB_TOKEN": "hub-Token-5",
}
LIBPQ = "host=db.internal user=nexus password=pg-Secret-4 dbname=nexus"


def test_secrets_are_never_shown(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env = dict(SECRETS)
    s = load_settings(env=env)
    assert s.postgres_dsn == SECRETS["NEXUS_POSTGRES_DSN"]  # the value itself is intact
    shown = repr(s) + str(s) + repr(describe(env=env))
    for secret in ("pg-Secret-1", "vk-Secret-2", "nats-Token-3", "hub-Token-5"):
        assert secret not in shown
    assert "postgresql://***@db.internal:5432/nexus" in shown
    assert "rediss://***@valkey.internal:6380/0" in shown
    libpq = repr(load_settings(env={"NEXUS_POSTGRES_DSN": LIBPQ}))
    assert "pg-Secret-4" not in libpq and "password=***" in libpq

    # What `nexus settings` prints, through the real command.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NEXUS_SETTINGS", raising=False)
    assert cli.main(["settings"]) == 0
    out = capsys.readouterr().out
    assert "NEXUS_POSTGRES_DSN     postgresql://***@db.internal:5432/nexus  [environment]" in out
    assert "NEXUS_HUB_TOKEN        ***  [environment]" in out
    for secret in ("pg-Secret-1", "vk-Secret-2", "nats-Token-3", "hub-Token-5"):
        assert secret not in out


def test_settings_are_frozen_and_typed() -> None:
    s = load_settings(env={"NEXUS_GATEWAY_WORKERS": "4"})
    assert isinstance(s, Settings) and s.gateway_workers == 4
    with pytest.raises(AttributeError):
        s.gateway_workers = 5  # type: ignore[misc]
