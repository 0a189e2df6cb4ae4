"""Bad hook config is refused at load, with the path of the field."""

# ruff: noqa: E501 - YAML config tables read better unwrapped

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path

import pytest

from ingress.hooks import ComplianceEngine
from ingress.hooks.rulepacks import PACKS_DIR, shipped_pack
from streams.config_base import ConfigError
from streams.config_hooks import SHIPPED_PACKS
from tests.hooks.conftest import hooks_config


@pytest.mark.parametrize(
    ("hooks_yaml", "message"),
    [
        pytest.param(
            "pipeline: [{id: x, type: magic-filter}]",
            "hooks.pipeline[0].type: unknown hook 'magic-filter'",
            id="unknown-hook",
        ),
        pytest.param(
            """
            pipeline:
              - {id: a, type: noop}
              - {id: b, type: noop}
              - {id: kw, type: keyword-filter, settings: {patterns: ['ok', '(unclosed']}}
            """,
            "hooks.pipeline[2].settings.patterns[1]: not a valid RE2 pattern",
            id="bad-regex",
        ),
        pytest.param(
            "pipeline: [{id: kw, type: keyword-filter, settings: {patterns: ['(a)\\1']}}]",
            "hooks.pipeline[0].settings.patterns[0]: not a valid RE2 pattern",
            id="backreference-is-not-re2",
        ),
        pytest.param(
            "pipeline: [{id: ip, type: ip-access-filter, stage: connection, settings: {mode: deny, cidrs: [10.0.0.0/33]}}]",
            "hooks.pipeline[0].settings.cidrs[0]: '10.0.0.0/33' is not a valid CIDR",
            id="bad-cidr",
        ),
        pytest.param(
            "pipeline: [{id: wh, type: webhook-forward, settings: {url: 'http://127.0.0.1:9/judge'}}]",
            "hooks.pipeline[0].settings.url: 'http://127.0.0.1:9/judge' resolves to a non-public address",
            id="webhook-loopback",
        ),
        pytest.param(
            "pipeline: [{id: wh, type: webhook-forward, settings: {url: 'http://169.254.169.254/latest'}}]",
            "hooks.pipeline[0].settings.url: 'http://169.254.169.254/latest' resolves to a non-public address",
            id="webhook-metadata-service",
        ),
        pytest.param(
            "pipeline: [{id: wh, type: webhook-forward, settings: {url: 'http://10.1.2.3/judge'}}]",
            "hooks.pipeline[0].settings.url: 'http://10.1.2.3/judge' resolves to a non-public address",
            id="webhook-private-rfc1918",
        ),
        pytest.param(
            "pipeline: [{id: wh, type: webhook-forward, settings: {url: 'http://localhost:8080/'}}]",
            "hooks.pipeline[0].settings.url: 'http://localhost:8080/' points at an internal host",
            id="webhook-localhost",
        ),
        pytest.param(
            "pipeline: [{id: p, type: pii-detector, settings: {entities: [CREDIT_CARD, SHOE_SIZE]}}]",
            "hooks.pipeline[0].settings.entities[1]: unknown pattern entity 'SHOE_SIZE'",
            id="unknown-entity",
        ),
        pytest.param(
            "pipeline: [{id: p, type: pii-detector, settings: {actions: {CREDIT_CARD: shred}}}]",
            "hooks.pipeline[0].settings.actions",
            id="bad-action",
        ),
        pytest.param(
            "pipeline: [{id: r, type: rulepack-engine, settings: {packs: [pii, astrology]}}]",
            "hooks.pipeline[0].settings.packs[1]: unknown rule pack 'astrology'",
            id="unknown-pack",
        ),
        pytest.param(
            "pipeline: [{id: r, type: rate-limiter, settings: {max_requests: 0, window_seconds: 1}}]",
            "hooks.pipeline[0].settings.max_requests: must be at least 1",
            id="rate-zero",
        ),
        pytest.param(
            "pipeline: [{id: r, type: rate-limiter, settings: {max_requests: 5}}]",
            "hooks.pipeline[0].settings: Object missing required field `window_seconds`",
            id="rate-missing-window",
        ),
        pytest.param(
            "pipeline: [{id: k, type: keyword-filter, settings: {patterns: [x], colour: red}}]",
            "hooks.pipeline[0].settings: Object contains unknown field `colour`",
            id="unknown-setting",
        ),
        pytest.param(
            "pipeline: [{id: s, type: request-size-validator, stage: response}]",
            "hooks.pipeline[0].stage: request-size-validator cannot run at the response stage",
            id="wrong-stage",
        ),
        pytest.param(
            "pipeline: [{id: a, type: noop}, {id: a, type: noop}]",
            "hooks.pipeline[1].id: missing or duplicate hook id 'a'",
            id="duplicate-id",
        ),
        pytest.param(
            "pipeline: [{id: a, type: noop, orgs: [initech]}]",
            "hooks.pipeline[0].orgs[0]: unknown org 'initech'",
            id="unknown-org-scope",
        ),
        pytest.param(
            """
            passthrough:
              - {bypass_hooks: true, set_at: 2026-01-01T00:00:00Z, expires_at: 2026-01-01T09:00:00Z,
                 reason: 'provider outage, hooks time out on every call'}
            """,
            "hooks.passthrough[0].expires_at: at most 8 hours after it was set",
            id="passthrough-too-long",
        ),
        pytest.param(
            """
            passthrough:
              - {bypass_hooks: true, set_at: 2026-01-01T00:00:00Z, expires_at: 2026-01-01T01:00:00Z, reason: outage}
            """,
            "hooks.passthrough[0].reason: give a reason of at least 20 characters",
            id="passthrough-short-reason",
        ),
        pytest.param(
            """
            passthrough:
              - {bypass_normalize: true, set_at: 2026-01-01T00:00:00Z, expires_at: 2026-01-01T01:00:00Z,
                 reason: raw provider bodies needed for debugging}
            """,
            "hooks.passthrough[0].bypass_normalize: requires bypass_cache",
            id="normalize-without-cache",
        ),
        pytest.param(
            """
            kill_switch:
              break_glass:
                - {node: gw-1, engaged_at: 2026-01-01T00:00:00Z, until: 2026-01-01T12:00:00Z,
                   reason: TLS interception breaks the payroll app}
            """,
            "hooks.kill_switch.break_glass[0].until: at most 8 hours after it was set",
            id="break-glass-too-long",
        ),
    ],
)
def test_rejected_with_field_path(hooks_yaml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        hooks_config(hooks_yaml)


# What only a node can judge: a file on its disk, a model installed on it, the
# addresses a host name resolves to there.  The Hub validates a config before
# it publishes it and has none of these, so config validation accepts them;
# the node refuses to build its engine, naming the field.
NODE_LOCAL = [
    pytest.param(
        "pipeline: [{id: p, type: pii-detector, settings: {ner_orgs: [acme], ner_model: no_such_model_xyz}}]",
        "hooks.pipeline[0].settings.ner_model: spaCy model 'no_such_model_xyz' is not installed",
        id="ner-model-missing",
    ),
    pytest.param(
        "pipeline: [{id: r, type: rulepack-engine, settings: {files: ['{missing}']}}]",
        "hooks.pipeline[0].settings.files[0]: cannot read rule pack",
        id="pack-file-missing",
    ),
    pytest.param(
        "pipeline: [{id: r, type: rulepack-engine, settings: {files: ['{bad}']}}]",
        "hooks.pipeline[0].settings.files[0].rules[0].patterns[0]: not a valid RE2",
        id="pack-file-bad-pattern",
    ),
    pytest.param(
        "pipeline: [{id: w, type: webhook-forward, stage: response, settings: {url: 'http://{host}:9/judge'}}]",
        "hooks.pipeline[0].settings.url: 'http://{host}:9/judge' resolves to a non-public address",
        id="webhook-name-resolves-to-loopback",
    ),
]


@pytest.mark.parametrize(("hooks_yaml", "message"), NODE_LOCAL)
def test_node_local_settings_are_checked_when_the_node_builds_its_engine(
    hooks_yaml: str, message: str, tmp_path: Path
) -> None:
    bad = tmp_path / "mine.yaml"
    bad.write_text("id: mine\nrules:\n  - id: r1\n    patterns: ['a(?<=b)']\n")
    host = socket.gethostname()
    if "{host}" in hooks_yaml and not _resolves_to_loopback(host):
        pytest.skip(f"this machine's name {host!r} does not resolve to a loopback address")
    values = {"{missing}": str(tmp_path / "nope.yaml"), "{bad}": str(bad), "{host}": host}
    for name, value in values.items():
        hooks_yaml, message = hooks_yaml.replace(name, value), message.replace(name, value)
    cfg = hooks_config(hooks_yaml)  # what the Hub checks: accepted
    with pytest.raises(ConfigError, match=re.escape(message)):
        ComplianceEngine(cfg)


def _resolves_to_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return any(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def test_a_good_config_loads() -> None:
    cfg = hooks_config(
        """
        total_timeout_ms: 2000
        pipeline:
          - {id: ip, type: ip-access-filter, stage: connection, settings: {mode: deny, cidrs: [198.51.100.0/24, "2001:db8::/32"]}}
          - {id: pii, type: pii-detector, priority: 10, fail: closed, orgs: [acme]}
          - {id: kw, type: keyword-filter, settings: {patterns: ['project\\s+falcon'], action: block}}
          - {id: packs, type: rulepack-engine}
          - {id: safety, type: content-safety, stage: response}
        streaming: {mode: buffer}
        """
    )
    assert [h.id for h in cfg.pipeline] == ["ip", "pii", "kw", "packs", "safety"]
    assert cfg.streaming.mode == "buffer"


def test_shipped_packs_are_the_listed_ones_and_valid() -> None:
    assert sorted(p.stem for p in PACKS_DIR.glob("*.yaml")) == sorted(SHIPPED_PACKS)
    for name in SHIPPED_PACKS:
        pack = shipped_pack(name)
        assert pack.id == name and pack.rules


def test_every_shipped_pattern_is_in_the_prescan() -> None:
    # A pattern Hyperscan cannot compile falls back to a full RE2 scan on
    # every request: correct but slow, so none of the shipped ones may.
    from ingress.hooks.rulepacks import RuleSet

    rules = RuleSet([shipped_pack(n) for n in SHIPPED_PACKS])
    assert rules._prefilter.always == frozenset()
