"""Alert channels: one client per configured channel, its secrets read
from the environment or a file when it is built."""

from __future__ import annotations

from collections.abc import Mapping

from processors.alerts.channels.base import ChannelClient, Outcome
from processors.alerts.channels.email import EmailClient
from processors.alerts.channels.pagerduty import PagerDutyClient
from processors.alerts.channels.slack import SlackClient
from processors.alerts.channels.webhook import WebhookClient
from processors.alerts.guard import check_url
from processors.alerts.secret_source import read_secret
from streams.config_alerts import Channel, EmailChannel, PagerDutyChannel, SlackChannel, WebhookChannel

__all__ = ["ChannelClient", "Outcome", "build"]


def _url(c: SlackChannel | WebhookChannel | PagerDutyChannel, where: str, env: Mapping[str, str]) -> str:
    if not (c.url_env or c.url_file):
        return c.url
    url = read_secret(f"{where}.url", env_name=c.url_env, file=c.url_file, env=env)
    # Only the variable's name was checked with the config: check the URL
    # (its text may be the credential, so the error must not quote it).
    check_url(
        url, allow_private=c.allow_private_network, where=f"{where}: the URL in {c.url_env or c.url_file}"
    )
    return url


def build(c: Channel, env: Mapping[str, str]) -> ChannelClient:
    """Raises streams.config_base.ConfigError when a secret is missing or a
    URL from the environment fails the SSRF check (naming the variable,
    never the value)."""
    where = f"alerts channel {c.name!r}"
    if isinstance(c, WebhookChannel):
        secret = read_secret(
            f"{where}.signing_secret", env_name=c.signing_secret_env, file=c.signing_secret_file, env=env
        )
        return WebhookClient(c, url=_url(c, where, env), secret=secret)
    if isinstance(c, SlackChannel):
        return SlackClient(c, url=_url(c, where, env))
    if isinstance(c, PagerDutyChannel):
        key = read_secret(
            f"{where}.routing_key", env_name=c.routing_key_env, file=c.routing_key_file, env=env
        )
        return PagerDutyClient(c, url=_url(c, where, env), routing_key=key)
    assert isinstance(c, EmailChannel)
    password = None
    if c.password_env or c.password_file:
        password = read_secret(f"{where}.password", env_name=c.password_env, file=c.password_file, env=env)
    return EmailClient(c, password=password)
