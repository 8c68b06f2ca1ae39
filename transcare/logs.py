"""structlog JSON logging. Events carry ids and codes, never names, birth dates or segments.

The libraries' own log records (aiokafka, faust, SQLAlchemy, uvicorn: Python's ``logging``)
go through the same JSON renderer, with the logger's name, so every log line of a process is
one JSON object (before, they were plain text on stderr, or mode's coloured text on stdout in
the worker).
"""

from __future__ import annotations

import logging
import sys

import structlog


def _level(level: str) -> int:
    numeric = logging.getLevelName(level.upper())
    return numeric if isinstance(numeric, int) else logging.INFO


def library_formatter() -> logging.Formatter:
    """The formatter of the standard library's records: JSON like structlog's events, the
    record's message as ``event``, its logger as ``logger``, ``proc`` as bound."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )


def _library_level(level: str) -> int:
    """The libraries' records from WARNING up; all of them when the service logs DEBUG."""
    return logging.DEBUG if _level(level) <= logging.DEBUG else logging.WARNING


def library_logging_config(level: str = "INFO") -> dict[str, object]:
    """``logging.config.dictConfig`` for processes whose framework configures logging itself
    (the worker: mode replaces the root handlers with its own coloured ones on stdout). As
    :func:`configure_logging`, the libraries' records from WARNING up, all of them at DEBUG."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": library_formatter}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json",
                                 "stream": "ext://sys.stderr"}},
        "root": {"level": _library_level(level), "handlers": ["default"]},
    }


def configure_logging(level: str = "INFO", process: str = "") -> None:
    """One JSON object per line on stderr, with the process role bound as ``proc``; the
    libraries' records from WARNING up (all of them at DEBUG)."""
    numeric = _level(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(library_formatter())
    logging.basicConfig(level=_library_level(level), handlers=[handler], force=True)
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
