"""Process entry points behind the CLI: each builds its part from settings and runs it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import structlog

from transcare.logs import configure_logging
from transcare.settings import Settings

if TYPE_CHECKING:
    from transitions.directory import ImportReport, Parsed
    from transitions.model import Member, StaffMember

log = structlog.get_logger("transcare")


def db_upgrade(settings: Settings, quiet: bool = False) -> int:
    from transcare.db.migrate import database_urls, upgrade_service

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    moved = upgrade_service(settings)
    if not quiet:
        for url in database_urls(settings):
            print(f"database at revision head: {_safe_url(url)}")
        if moved:
            print(f"moved {moved} stored messages to the message store "
                  f"{_safe_url(settings.effective_message_store_url)}")
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def run_listener(settings: Settings) -> int:
    from transcare.tuning import tune_process

    configure_logging(settings.log_level, "listener")
    _use_uvloop()
    tune_process()
    return asyncio.run(_listener_main(settings))


async def _listener_main(settings: Settings) -> int:
    from adt_listener.app import start_listener
    from transcare.cli import install_stop_signals

    stop = asyncio.Event()
    install_stop_signals(stop)
    listener = await start_listener(settings)
    for host, port in listener.addresses:
        print(f"MLLP listener on {host}:{port}", flush=True)
    await stop.wait()
    log.info("listener.stopping")
    await listener.stop()
    return 0


def run_worker(settings: Settings) -> int:
    configure_logging(settings.log_level, "worker")
    from transcare.worker import run

    return run(settings)


def run_web(settings: Settings) -> int:
    configure_logging(settings.log_level, "web")
    from transcare.web.server import run

    return run(settings)


def run_up(settings: Settings) -> int:
    configure_logging(settings.log_level, "up")
    from transcare.supervisor import run

    return run(settings)


def send_files(files: Sequence[Path], host: str, port: int, timeout: float) -> int:
    """Send every message of every file; print one line per message with its ACK code."""
    return asyncio.run(_send(files, host, port, timeout))


async def _send(files: Sequence[Path], host: str, port: int, timeout: float) -> int:
    from adt_listener.client import MllpClient
    from adt_listener.hl7.framing import split_file

    client = await MllpClient.connect(host, port, timeout)
    failures = 0
    try:
        for path in files:
            for n, message in enumerate(split_file(path.read_bytes()), 1):
                replies = await client.send(message)
                codes = "/".join(r.code for r in replies)
                failures += replies[-1].code not in ("AA", "CA")
                print(f"{path}#{n}\t{_control_id(message)}\t{codes}", flush=True)
    finally:
        await client.close()
    return 1 if failures else 0


def replay(settings: Settings, since: str | None, facility: str | None) -> int:
    """Mark stored, non-rejected messages for publishing again; the running listener's relay
    publishes them and the worker processes them again (events keep their ids)."""
    from datetime import datetime

    from adt_listener.store import SqlAlchemyMessageStore
    from transcare.db.database import open_database

    start = None
    if since:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            print(f"transcare replay: --since {since!r} is not an ISO 8601 date or time",
                  file=sys.stderr)
            return 2
        if start.tzinfo is None:
            start = start.replace(tzinfo=settings.time_zone(""))

    async def run() -> int:
        db = open_database(settings.effective_message_store_url, settings.sqlite_synchronous)
        try:
            return await SqlAlchemyMessageStore(db).republish(start, facility)
        finally:
            await db.dispose()

    count = asyncio.run(run())
    print(f"{count} stored messages queued for publishing again")
    return 0


def import_directory(settings: Settings, kind: str, path: Path) -> int:
    """``transcare roster import`` / ``transcare staff import``: migrate, then upsert the rows.

    Prints a summary line, then ``FILE:LINE: reason`` for each rejected row. Returns 0 when
    every row loaded, 1 when some were rejected, 2 for a file-level problem (unreadable file,
    not UTF-8, not CSV, a required column missing).
    """
    from transitions.directory import ImportFileError, parse_roster_csv, parse_staff_csv

    try:
        text = path.read_bytes().decode("utf-8-sig")
        parsed = parse_roster_csv(text) if kind == "roster" else parse_staff_csv(text)
    except OSError as exc:
        return _file_problem(kind, path, exc.strerror or str(exc))
    except UnicodeDecodeError as exc:
        return _file_problem(kind, path, f"not UTF-8 text (byte {exc.start})")
    except ImportFileError as exc:
        return _file_problem(kind, path, str(exc))
    db_upgrade(settings, quiet=True)
    report = asyncio.run(_upsert_directory(settings, kind, parsed))
    print(report.summary(kind), flush=True)
    for error in report.errors:
        print(f"{path}:{error.line}: {error.reason}")
    return 1 if report.errors else 0


def _file_problem(kind: str, path: Path, reason: str) -> int:
    print(f"transcare {kind} import: {path}: {reason}", file=sys.stderr)
    return 2


async def _upsert_directory(settings: Settings, kind: str,
                            parsed: Parsed[Member] | Parsed[StaffMember]) -> ImportReport:
    from transcare.db.database import open_database
    from transitions.directory_store import SqlAlchemyDirectory

    db = open_database(settings.effective_database_url, settings.sqlite_synchronous)
    try:
        directory = SqlAlchemyDirectory(db)
        if kind == "staff":
            return await directory.upsert_staff(cast("Parsed[StaffMember]", parsed))
        return await directory.upsert_members(cast("Parsed[Member]", parsed))
    finally:
        await db.dispose()


def validate_files(files: Sequence[Path]) -> int:
    """Print hl7apy's strict findings for every message of every file; 1 if any."""
    from adt_listener.hl7.charset import CharsetError, decode_message
    from adt_listener.hl7.framing import split_file
    from adt_listener.onboarding import Finding, validate_strict

    problems = 0
    for path in files:
        for n, message in enumerate(split_file(path.read_bytes()), 1):
            try:
                findings = validate_strict(decode_message(message)[0])
            except CharsetError as exc:
                findings = [Finding("MSH-18", exc.reason)]
            problems += bool(findings)
            status = "ok" if not findings else f"{len(findings)} problem(s)"
            print(f"{path}#{n}\t{_control_id(message)}\t{status}")
            for f in findings:
                print(f"    {f.where}: {f.problem}")
    return 1 if problems else 0


def _control_id(message: bytes) -> str:
    first = message.split(b"\r")[0]
    fields = first.split(first[3:4]) if len(first) > 3 else []
    return fields[9].decode("utf-8", "replace") if len(fields) > 9 else ""


def _use_uvloop() -> None:
    if sys.platform != "win32":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
