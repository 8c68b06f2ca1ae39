"""The channels' adapters: e-mail over SMTP (aiosmtplib) and signed webhooks (httpx).

Each sender delivers one :class:`~followup.notify.content.Notice` to one address and either
returns (delivered) or raises :class:`DeliveryError`. Reasons name the channel and what
failed (an SMTP code, an HTTP status, an exception type), never the address, the URL or the
message content: they are stored and logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Protocol
from urllib.parse import urlsplit

import aiosmtplib
import httpx

from followup.notify.content import Notice, email_message, webhook_body
from followup.notify.signing import headers
from transcare.settings import Settings


class DeliveryError(Exception):
    """A delivery failed. ``permanent``: trying again cannot help (the notification is dead)."""

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class Sender(Protocol):
    async def send(self, notice: Notice, address: str) -> None:
        """Deliver ``notice`` to ``address``. Raises :class:`DeliveryError`."""
        ...


class SmtpSender:
    """E-mail over SMTP: one connection per message (``aiosmtplib.send``).

    ``starttls`` requires STARTTLS (False: plain, as on a local relay); port 465 means
    implicit TLS. Username and password are used when the username is set.
    """

    def __init__(self, host: str, port: int, from_addr: str, starttls: bool = False,
                 username: str = "", password: str = "", timeout_s: float = 10.0) -> None:
        self._host, self._port, self._from = host, port, from_addr
        self._starttls, self._username, self._password = starttls, username, password
        self._timeout = timeout_s

    async def send(self, notice: Notice, address: str) -> None:
        try:
            msg = email_message(notice, address, self._from)
        except ValueError as exc:  # a line break in the address: header injection refused
            raise DeliveryError("email: invalid recipient address", permanent=True) from exc
        msg["Date"] = formatdate(usegmt=True)
        try:
            await aiosmtplib.send(
                msg, hostname=self._host, port=self._port, timeout=self._timeout,
                username=self._username or None, password=self._password or None,
                use_tls=self._port == 465, start_tls=self._starttls and self._port != 465)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise smtp_error(exc, self._timeout) from exc


def smtp_error(exc: BaseException, timeout_s: float) -> DeliveryError:
    """The :class:`DeliveryError` for an SMTP failure; 5xx refusals of the recipient or the
    message are permanent, everything else (connection, timeout, 4xx, auth) is transient."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = sorted({r.code for r in exc.recipients})
        return DeliveryError(f"email: recipient refused ({','.join(map(str, codes))})",
                             permanent=all(code >= 500 for code in codes))
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
        what = "recipient" if isinstance(exc, aiosmtplib.SMTPRecipientRefused) else "message"
        return DeliveryError(f"email: {what} refused ({exc.code})", permanent=exc.code >= 500)
    if isinstance(exc, TimeoutError):
        return DeliveryError(f"email: no answer within {timeout_s:g}s")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return DeliveryError(f"email: server answered {exc.code} ({type(exc).__name__})")
    if isinstance(exc, OSError):  # includes SMTPConnectError, SMTPServerDisconnected
        cause = exc.__cause__ or exc
        return DeliveryError(f"email: cannot reach the SMTP server ({type(cause).__name__})")
    return DeliveryError(f"email: {type(exc).__name__}")


class WebhookSender:
    """A signed JSON POST (see :mod:`followup.notify.signing`); any 2xx is delivered.

    Arguments:
        secret: the HMAC-SHA256 key (``TRANSCARE_WEBHOOK_SECRET``); must not be empty.
        timeout_s: for the whole request.
        client: a shared client (closed by its owner); default: one of our own.
        clock: unix seconds for the signature timestamp.

    Raises:
        ValueError: an empty secret.
    """

    def __init__(self, secret: str, timeout_s: float = 10.0, client: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("a webhook sender needs a secret (TRANSCARE_WEBHOOK_SECRET)")
        self._secret, self._timeout, self._clock = secret, timeout_s, clock
        self._own = client is None
        self._client = client or httpx.AsyncClient(follow_redirects=False)

    async def send(self, notice: Notice, address: str) -> None:
        if urlsplit(address).scheme not in ("http", "https"):
            raise DeliveryError("webhook: URL is not http or https", permanent=True)
        body = webhook_body(notice)
        sent = headers(self._secret, body, int(self._clock()), notice.notification_id)
        try:
            response = await self._client.post(address, content=body, headers=sent,
                                               timeout=self._timeout)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"webhook: no answer within {self._timeout:g}s") from exc
        except (httpx.HTTPError, OSError) as exc:
            raise DeliveryError(f"webhook: request failed ({type(exc).__name__})") from exc
        check_status(response.status_code)

    async def aclose(self) -> None:
        """Close the client if this sender created it."""
        if self._own:
            await self._client.aclose()


def check_status(status: int) -> None:
    """Return on 2xx; raise :class:`DeliveryError`, permanent for 4xx other than 408 and
    429 (the receiver will keep refusing the same request)."""
    if 200 <= status < 300:
        return
    permanent = 400 <= status < 500 and status not in (408, 429)
    raise DeliveryError(f"webhook: HTTP {status}", permanent=permanent)


def senders_from_settings(settings: Settings, client: httpx.AsyncClient | None = None
                          ) -> dict[str, Sender]:
    """The configured senders by channel: e-mail when ``TRANSCARE_SMTP_HOST`` is set,
    webhooks when ``TRANSCARE_WEBHOOK_SECRET`` is set. A missing channel's notifications
    are recorded as failed ("not configured") and retried."""
    senders: dict[str, Sender] = {}
    if settings.smtp_host:
        senders["email"] = SmtpSender(
            settings.smtp_host, settings.smtp_port, settings.smtp_from, settings.smtp_starttls,
            settings.smtp_username, settings.smtp_password)
    if settings.webhook_secret:
        senders["webhook"] = WebhookSender(settings.webhook_secret, client=client)
    return senders
