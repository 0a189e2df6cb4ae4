"""The alerts: section: the documented example loads; bad input is a
ConfigError naming the field; secrets come from the environment or an
owner-only file and no error quotes one; the pure parts (windows, buckets,
backoff, the signature) behave as documented."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import msgspec
import pytest

from processors.alerts import channels, rules
from processors.alerts.channels import webhook
from processors.alerts.delivery import backoff_s
from processors.alerts.ratelimit import TokenBucket
from processors.alerts.secret_source import read_secret
from streams import config_alerts
from streams.config_alerts import AlertsConfig, BlockRateRule, SlackChannel, WebhookChannel
from streams.config_base import ConfigError
from streams.config_validation import parse_config
from streams.events import Tenant
from streams.events_alerts import AlertRaised
from streams.events_compliance import StageDecision

EXAMPLE = config_alerts.__doc__.split("::", 1)[1]  # type: ignore[union-attr]


def _section(yaml: str) -> str:
    return "alerts:\n" + "\n".join("  " + line for line in yaml.strip().splitlines()) + "\n"


def test_the_documented_example_loads() -> None:
    text = "\n".join(line[4:] for line in EXAMPLE.splitlines())
    cfg = parse_config(text, source="example").alerts
    assert [c.name for c in cfg.channels] == ["ops", "chat", "pager", "mail"]
    assert [r.name for r in cfg.rules] == ["budgets", "blocks", "nodes", "drift", "siem", "audit-chain"]


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        pytest.param(
            "channels: [{kind: webhook, name: a, url: 'https://x.example', signing_secret_env: S, typo: 1}]",
            "unknown field `typo`",
            id="unknown-field",
        ),
        pytest.param(
            "channels: [{kind: webhook, name: a, url: 'http://127.0.0.1:9/h', signing_secret_env: S}]",
            "alerts.channels[0].url",
            id="loopback-without-allow",
        ),
        pytest.param(
            "channels: [{kind: webhook, name: a, url: 'https://localhost/h', signing_secret_env: S}]",
            "internal host",
            id="localhost-by-name",
        ),
        pytest.param(
            "channels: [{kind: webhook, name: a, url: 'https://u:p@x.example/h', signing_secret_env: S}]",
            "credentials in the URL",
            id="credentials-in-url",
        ),
        pytest.param(
            "channels: [{kind: webhook, name: a, url: 'https://x.example'}]",
            "signing_secret_env or signing_secret_file is required",
            id="unsigned-webhook",
        ),
        pytest.param(
            "channels: [{kind: slack, name: a, url: 'https://x.example', url_env: U}]",
            "give one of url, url_env, url_file",
            id="two-url-sources",
        ),
        pytest.param(
            "channels: [{kind: pagerduty, name: a}]",
            "routing_key_env or routing_key_file",
            id="pagerduty-without-key",
        ),
        pytest.param(
            "channels: [{kind: email, name: m, host: smtp.example.com, sender: nope, to: [a@b.example]}]",
            "alerts.channels[0].sender",
            id="bad-sender",
        ),
        pytest.param(
            "channels: [{kind: email, name: m, host: 10.0.0.5, sender: a@b.example, to: [a@b.example]}]",
            "non-public address",
            id="private-smtp",
        ),
        pytest.param(
            "channels: [{kind: email, name: m, host: smtp.example.com, sender: a@b.example,"
            " to: [a@b.example],"
            " starttls: true, tls: true}]",
            "starttls or tls",
            id="starttls-and-tls",
        ),
        pytest.param(
            "channels: [{kind: webhook, name: a, url: 'https://x.example', signing_secret_env: S,"
            " rate_per_minute: 0}]",
            "rate_per_minute",
            id="zero-rate",
        ),
        pytest.param(
            "rules: [{kind: budget, name: b, channels: [nowhere]}]",
            "unknown channel 'nowhere'",
            id="unknown-channel",
        ),
        pytest.param(
            "rules: [{kind: budget, name: b, channels: []}]", "at least one channel", id="no-channel"
        ),
        pytest.param(
            "channels: [{kind: slack, name: c, url_env: U}]\nrules: [{kind: block_rate, name: b,"
            " channels: [c], min_ratio: 2}]",
            "alerts.rules[0].min_ratio",
            id="ratio-over-one",
        ),
        pytest.param(
            "rules: [{kind: sometimes, name: b, channels: []}]",
            "Invalid value 'sometimes'",
            id="unknown-rule-kind",
        ),
    ],
)
def test_bad_alerts_sections_are_refused_naming_the_field(yaml: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_section(yaml), source="f.yaml")
    assert message in str(err.value)


def test_a_secret_comes_from_the_environment_or_an_owner_only_file(tmp_path: Path) -> None:
    assert read_secret("w", env_name="X", file="", env={"X": "v"}) == "v"
    with pytest.raises(ConfigError, match="environment variable X is not set"):
        read_secret("w", env_name="X", file="", env={})
    f = tmp_path / "secret"
    f.write_text("from-a-file\n")
    f.chmod(0o644)
    with pytest.raises(ConfigError, match="readable or writable by others") as err:
        read_secret("w", env_name="", file=str(f), env={})
    assert "from-a-file" not in str(err.value)
    f.chmod(0o600)
    assert read_secret("w", env_name="", file=str(f), env={}) == "from-a-file"
    link = tmp_path / "link"
    link.symlink_to(f)
    with pytest.raises(ConfigError, match="cannot open"):
        read_secret("w", env_name="", file=str(link), env={})


def test_a_secret_url_failing_the_guard_is_refused_without_being_quoted() -> None:
    secret_url = "http://127.0.0.1:9/services/T000/B000/XXXXsecretXXXX"
    c = SlackChannel(name="chat", url_env="SLACK_URL")
    with pytest.raises(ConfigError) as err:
        channels.build(c, {"SLACK_URL": secret_url})
    assert "the URL in SLACK_URL" in str(err.value) and "XXXXsecretXXXX" not in str(err.value)
    assert "non-public address" in str(err.value)


def test_the_webhook_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    alert = AlertRaised(rule="r", subject="s", title="t", summary="x")
    body = webhook.body(alert)
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhook.sign(b"k", 1_700_000_000, body) == "v1=" + expected
    doc = msgspec.json.decode(body)
    assert doc["id"] == alert.id and doc["type"] == "nexus.alert" and doc["details"] == {}


def test_block_rate_windows_use_event_time_and_take_late_events() -> None:
    rule = BlockRateRule(name="b", window_s=10, min_count=3, per="global", channels=("x",))
    cfg = AlertsConfig(channels=(), rules=(rule,))
    rates = rules.BlockRates()

    def at(second: int, decision: str = "block") -> list[rules.Firing]:
        return rates.observe(
            cfg, StageDecision(decision=decision, occurred_at_ms=second * 1000, tenant=Tenant())
        )

    assert at(100) == [] and at(105) == []
    assert at(103)[0].details["count"] == "3"  # late, inside the window: counted
    assert at(80) == []  # older than the window: changes nothing
    assert at(111)[0].details["count"] == "3"  # 100 left the window (102..111): 105, 103, 111
    assert at(125) == []  # everything else left


def test_token_bucket_and_backoff() -> None:
    now = [0.0]
    bucket = TokenBucket(2, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] += 30.0  # one token back (2 a minute)
    assert [bucket.take(), bucket.take()] == [True, False]
    assert [backoff_s(n, 1.0, 5.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


def test_channels_are_built_from_secrets_and_a_missing_one_is_named() -> None:
    c = WebhookChannel(name="ops", url="https://hooks.example.com/x", signing_secret_env="HOOK_SECRET")
    with pytest.raises(ConfigError, match="HOOK_SECRET is not set"):
        channels.build(c, {})
    assert channels.build(c, {"HOOK_SECRET": "k"}).config is c
