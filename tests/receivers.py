"""Real peers for notification tests: an SMTP server (aiosmtpd) and an HTTP webhook receiver
(Starlette under uvicorn), both in-process on free ports. Fixtures ``smtp`` and ``receiver`` in
``tests/conftest.py``."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import uvicorn
from aiosmtpd.controller import Controller
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from transcare.broker import free_port

# --- the real servers ----------------------------------------------------------------------------

class Mailbox:
    """aiosmtpd handler: keeps each message; refuses recipients whose name starts 'refuse'."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address.startswith("refuse"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    port: int
    mailbox: Mailbox
    controller: Controller
    running: bool = True

    def stop(self) -> None:
        if self.running:
            self.controller.stop()
            self.running = False


def run_smtp() -> Iterator[SmtpServer]:
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    server = SmtpServer(port, mailbox, controller)
    yield server
    server.stop()


@dataclass
class Receiver:
    """The webhook receiver's record: (headers, body) per request; fails the first
    ``fail_next`` requests with ``fail_status``, and always answers 404 under /gone/."""

    port: int = 0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    fail_next: int = 0
    fail_status: int = 500

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{name}"

    async def hook(self, request: Request) -> Response:
        self.requests.append((dict(request.headers), await request.body()))
        if self.fail_next > 0:
            self.fail_next -= 1
            return Response(status_code=self.fail_status)
        return Response(status_code=204)

    async def gone(self, request: Request) -> Response:
        return Response(status_code=404)

    def keys(self) -> list[str]:
        return [h["idempotency-key"] for h, _ in self.requests]


async def run_receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = Starlette(routes=[Route("/hook/{name}", rec.hook, methods=["POST"]),
                            Route("/gone/{name}", rec.gone, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    rec.port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    yield rec
    server.should_exit = True
    await task
    sock.close()


