"""Run the web app with uvicorn (``transcare web``)."""

from __future__ import annotations

import uvicorn

from transcare.settings import Settings
from transcare.web.app import create_app


def run(settings: Settings) -> int:
    print(f"HTTP on http://{settings.http_host}:{settings.http_port}/", flush=True)
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port,
                log_level="warning", access_log=False,
                log_config=None)  # uvicorn's records go through transcare.logs' JSON handler
    return 0
