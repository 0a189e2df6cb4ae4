"""The e-mail channel against real SMTP servers (aiosmtpd): implicit TLS,
a server that does not offer STARTTLS (refused, not sent in the clear), a
wrong password (final, the password never in the reason), a certificate
that does not verify."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from processors.alerts.channels.email import EmailClient
from streams.config_alerts import EmailChannel
from streams.events_alerts import AlertRaised
from tests.alerts.smtp import SmtpReceiver

ALERT = AlertRaised(rule="r", subject="s", severity="error", title="Something broke", summary="it did")


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmtpReceiver]:
    s = SmtpReceiver(tmp_path, mode=request.param).start()
    yield s
    s.stop()


def _channel(s: SmtpReceiver, **kw: object) -> EmailChannel:
    base: dict[str, object] = {
        "name": "mail",
        "host": "127.0.0.1",
        "port": s.port,
        "tls_ca_file": str(s.ca_file),
        "username": "nexus",
        "password_env": "P",
        "sender": "nexus@example.com",
        "to": ("oncall@example.com",),
        "allow_private_network": True,
    }
    return EmailChannel(**{**base, **kw})  # type: ignore[arg-type]


# aiosmtpd counts only STARTTLS as TLS when it weighs AUTH; this session is
# TLS from its first byte.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("server", ["implicit"], indirect=True)
async def test_implicit_tls_delivers(server: SmtpReceiver) -> None:
    out = await EmailClient(_channel(server, starttls=False, tls=True), password=server.password).send(ALERT)
    assert out.ok and out.status_code == 250
    assert server.envelopes == [("nexus@example.com", ["oncall@example.com"], True)]
    assert server.messages[0]["Subject"] == "[nexus] [ERROR] Something broke"


@pytest.mark.parametrize("server", ["plain"], indirect=True)
async def test_a_server_without_starttls_is_refused_not_used_in_the_clear(server: SmtpReceiver) -> None:
    out = await EmailClient(_channel(server), password=server.password).send(ALERT)
    assert not out.ok and not out.retry and out.reason == "the server does not offer STARTTLS"
    assert server.messages == []


@pytest.mark.parametrize("server", ["starttls"], indirect=True)
async def test_a_wrong_password_is_final_and_never_quoted(server: SmtpReceiver) -> None:
    out = await EmailClient(_channel(server), password="not-the-password").send(ALERT)
    assert not out.ok and not out.retry and out.status_code == 535
    assert "not-the-password" not in out.reason and server.auth_failures >= 1 and server.messages == []


@pytest.mark.parametrize("server", ["starttls"], indirect=True)
async def test_a_certificate_that_does_not_verify_fails_the_delivery(server: SmtpReceiver) -> None:
    out = await EmailClient(_channel(server, tls_ca_file=""), password=server.password).send(ALERT)
    assert not out.ok and out.reason == "TLS failed: SSLCertVerificationError"
    assert server.messages == []
