"""The ``transcare`` command line: one composition root per process."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from transcare.settings import Settings, SettingsError, load_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="transcare", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run everything on the embedded default")
    _service_args(up)
    for name, text in (("listener", "run the MLLP listener and relay"),
                       ("worker", "run the stream processors"),
                       ("web", "run the HTTP API and pages")):
        part = sub.add_parser(name, help=text)
        _service_args(part)
        if name == "worker":
            part.add_argument("--stages", default=None, metavar="LIST",
                              help="comma-separated stages this process runs: normaliser, "
                                   "transitions, followup (default: all; "
                                   "TRANSCARE_WORKER_STAGES)")
    send = sub.add_parser("send", help="send HL7 files over MLLP and print each ACK code")
    send.add_argument("--host", default="127.0.0.1")
    send.add_argument("--port", type=int, default=None)
    send.add_argument("--timeout", type=float, default=30.0)
    send.add_argument("files", nargs="+", type=Path, metavar="FILE")
    replay = sub.add_parser("replay", help="re-publish stored messages (processing is "
                            "idempotent)")
    replay.add_argument("--since", default=None, metavar="TIME",
                        help="ISO 8601 date or time; without an offset, TRANSCARE_TIME_ZONE")
    replay.add_argument("--facility", default=None, metavar="F", help="MSH-4 sending facility")
    _data_dir_arg(replay)
    validate = sub.add_parser("validate", help="strict HL7 validation of sample files "
                              "(hl7apy), for onboarding a feed")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    for kind, what in (("roster", "the enrollment roster"), ("staff", "the staff directory")):
        actions = sub.add_parser(kind, help=what).add_subparsers(dest="action", required=True)
        load = actions.add_parser("import", help=f"load {what} from a CSV file (format: "
                                  "docs/roster-and-staff.md); exit 1 if rows were rejected")
        load.add_argument("file", type=Path, metavar="FILE.csv")
        _data_dir_arg(load)
    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    _data_dir_arg(db_sub.add_parser("upgrade", help="apply migrations"))
    return p


def _data_dir_arg(p: argparse.ArgumentParser) -> None:
    """The data directory of the service these commands act on (as ``transcare up
    --data-dir``): its SQLite databases and settings file."""
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the service's data directory (default: TRANSCARE_DATA_DIR, else ./data)")


def _service_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--mllp-port", type=int, default=None)
    p.add_argument("--http-port", type=int, default=None)


def _settings(args: argparse.Namespace) -> Settings:
    env = dict(os.environ)
    if getattr(args, "data_dir", None):
        env["TRANSCARE_DATA_DIR"] = str(args.data_dir)
    if getattr(args, "stages", None):
        env["TRANSCARE_WORKER_STAGES"] = args.stages
    settings = load_settings(env)
    return settings.with_overrides(mllp_port=getattr(args, "mllp_port", None),
                                   http_port=getattr(args, "http_port", None))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"transcare: configuration error: {exc}", file=sys.stderr)
        return 2
    return int(_dispatch(args, settings) or 0)


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from transcare import processes

    command = args.command
    if command == "db":
        return processes.db_upgrade(settings)
    if command == "replay":
        return processes.replay(settings, args.since, args.facility)
    if command in ("roster", "staff"):
        return processes.import_directory(settings, command, args.file)
    if command == "validate":
        return processes.validate_files(args.files)
    if command == "send":
        return processes.send_files(args.files, args.host, args.port or settings.mllp_port,
                                    args.timeout)
    runners = {"up": processes.run_up, "listener": processes.run_listener,
               "worker": processes.run_worker, "web": processes.run_web}
    return runners[command](settings)


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


if __name__ == "__main__":
    sys.exit(main())
