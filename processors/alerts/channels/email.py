"""E-mail over SMTP: STARTTLS after EHLO (or implicit TLS), optional
login, one plain-text message per alert.

smtplib is blocking, so a delivery runs in a thread.  The SMTP server is
resolved once, checked by the SSRF rule (unless the channel allows private
networks) and connected to at that very address; TLS still verifies the
certificate against the configured host name.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from processors.alerts.channels.base import Outcome, iso_time
from processors.alerts.guard import PrivateAddressRefused, check_addresses
from streams.config_alerts import EmailChannel
from streams.events_alerts import AlertRaised


def message(config: EmailChannel, alert: AlertRaised) -> EmailMessage:
    state = "RESOLVED" if alert.status == "resolved" else alert.severity.upper()
    msg = EmailMessage()
    msg["Subject"] = f"{config.subject_prefix} [{state}] {alert.title}".strip()
    msg["From"] = config.sender
    msg["To"] = ", ".join(config.to)
    msg["Date"] = format_datetime(dt.datetime.fromtimestamp(alert.occurred_at_ms / 1000, dt.UTC))
    msg["Message-ID"] = make_msgid(idstring=alert.id.replace("-", ""), domain="nexus.alerts")
    msg["X-Nexus-Alert-Id"] = alert.id
    lines = [
        alert.summary,
        "",
        f"status:    {alert.status}",
        f"severity:  {alert.severity}",
        f"rule:      {alert.rule} ({alert.rule_kind})",
        f"subject:   {alert.subject}",
        f"at:        {iso_time(alert.occurred_at_ms)}",
    ]
    if alert.suppressed:
        lines.append(f"suppressed: {alert.suppressed} similar alerts since the last one")
    if alert.details:
        lines += ["", *(f"{k}: {v}" for k, v in alert.details.items())]
    lines += ["", f"alert id: {alert.id}"]
    msg.set_content("\n".join(lines) + "\n")
    return msg


class _PinnedSMTP(smtplib.SMTP):
    """Connects to the address the SSRF check saw; ``_host`` (what STARTTLS
    verifies the certificate against; smtplib sets it only when connecting
    from its constructor) is the configured name."""

    def __init__(self, address: str, server_name: str, **kwargs: Any) -> None:
        self._address = address
        super().__init__(**kwargs)
        self._host = server_name

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._address, port), timeout)


class _PinnedSMTPSSL(smtplib.SMTP_SSL):
    def __init__(self, address: str, server_name: str, **kwargs: Any) -> None:
        self._address = address
        super().__init__(**kwargs)
        self._host = server_name

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((self._address, port), timeout)
        return self.context.wrap_socket(sock, server_hostname=host)


class EmailClient:
    def __init__(self, config: EmailChannel, *, password: str | None) -> None:
        self.config = config
        self._password = password

    def _tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.config.tls_ca_file or None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def _address(self) -> str:
        c = self.config
        infos = socket.getaddrinfo(c.host, c.port, type=socket.SOCK_STREAM)
        addresses = [str(i[4][0]) for i in infos]
        if not addresses:
            raise OSError(f"cannot resolve {c.host}")
        if not c.allow_private_network:
            check_addresses(c.host, addresses)
        return addresses[0]

    def _send(self, msg: EmailMessage) -> Outcome:
        c = self.config
        address = self._address()
        smtp: smtplib.SMTP
        if c.tls:
            smtp = _PinnedSMTPSSL(address, c.host, timeout=c.timeout_s, context=self._tls())
        else:
            smtp = _PinnedSMTP(address, c.host, timeout=c.timeout_s)
        try:
            code, _ = smtp.connect(c.host, c.port)
            if code != 220:
                return Outcome(False, code, f"SMTP greeting {code}", retry=400 <= code < 500)
            smtp.ehlo()
            if c.starttls:
                if not smtp.has_extn("starttls"):
                    return Outcome(False, reason="the server does not offer STARTTLS")
                smtp.starttls(context=self._tls())
                smtp.ehlo()
            if c.username and self._password is not None:
                smtp.login(c.username, self._password)
            refused = smtp.send_message(msg)
            if refused:
                return Outcome(False, 250, f"{len(refused)} of {len(c.to)} recipients refused")
            return Outcome(True, 250)
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    async def send(self, alert: AlertRaised) -> Outcome:
        msg = message(self.config, alert)
        try:
            return await asyncio.to_thread(self._send, msg)
        except PrivateAddressRefused as exc:
            return Outcome(False, reason=str(exc))
        except smtplib.SMTPNotSupportedError:
            return Outcome(
                False, reason="the server does not offer what the channel needs (AUTH, or SMTPUTF8)"
            )
        except smtplib.SMTPAuthenticationError as exc:
            return Outcome(False, exc.smtp_code, f"SMTP authentication refused ({exc.smtp_code})")
        except smtplib.SMTPRecipientsRefused as exc:
            return Outcome(False, reason=f"all {len(exc.recipients)} recipients refused")
        except smtplib.SMTPResponseException as exc:
            code = exc.smtp_code
            return Outcome(False, code, f"SMTP {code}", retry=400 <= code < 500)
        except ssl.SSLError as exc:
            return Outcome(False, reason=f"TLS failed: {type(exc).__name__}")
        except (smtplib.SMTPException, OSError, TimeoutError) as exc:
            return Outcome(False, reason=f"SMTP failed: {type(exc).__name__}", retry=True)

    async def close(self) -> None:
        return None
