"""structlog JSON logging. Events carry ids and codes, never names, birth dates or segments."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "INFO", process: str = "") -> None:
    """One JSON object per line on stderr, with the process role bound as ``proc``."""
    numeric = logging.getLevelName(level.upper())
    numeric = numeric if isinstance(numeric, int) else logging.INFO
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr,
                        format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    if process:
        structlog.contextvars.bind_contextvars(proc=process)
