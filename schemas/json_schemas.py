"""JSON Schema files generated from the event models, and the loader for the committed copies.

The ``*.schema.json`` files beside this module are generated, never edited by hand:

    python -m schemas.json_schemas          # rewrites them in place

A unit test compares the committed files with :func:`generate` so they cannot drift.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.adt_event import AdtEvent, DeadLetter, RawMessage
from schemas.episode_event import EpisodeEvent
from schemas.task_event import Notification, TaskEvent

SCHEMA_DIR = Path(__file__).resolve().parent
BASE_ID = "https://transcare.invalid/schemas/"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

# schema name -> (model, title)
MODELS: dict[str, tuple[type[BaseModel], str]] = {
    "adt_event.v1": (AdtEvent, "ADT event, schema version 1"),
    "raw_message.v1": (RawMessage, "Raw HL7 message envelope (adt.raw.v1), schema version 1"),
    "deadletter.v1": (DeadLetter, "Dead-lettered message, schema version 1"),
    "episode_event.v1": (EpisodeEvent, "Episode event (transitions.episodes.v1), schema version 1"),
    "task_event.v1": (TaskEvent, "Task event (followup.tasks.v1), schema version 1"),
    "notification.v1": (Notification, "Notification (followup.notifications.v1), schema version 1"),
}


def file_name(name: str) -> str:
    """``adt_event.v1`` -> ``adt_event.v1.schema.json``."""
    return f"{name}.schema.json"


def generate(name: str) -> dict[str, Any]:
    """The JSON Schema of model ``name`` (a key of :data:`MODELS`), with ``$id`` and ``title``.

    Raises:
        KeyError: unknown schema name.
    """
    model, title = MODELS[name]
    body = model.model_json_schema(mode="serialization")
    return {"$schema": DRAFT, "$id": BASE_ID + file_name(name), **body, "title": title}


def render(name: str) -> str:
    """The file content for schema ``name``: pretty-printed JSON with a final newline."""
    return json.dumps(generate(name), indent=2, ensure_ascii=False) + "\n"


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into ``directory``; returns the paths written."""
    written = []
    for name in MODELS:
        path = directory / file_name(name)
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    return written


def load(name: str, directory: Path = SCHEMA_DIR) -> dict[str, Any]:
    """Read a committed schema file (``adt_event.v1`` or ``adt_event.v1.schema.json``).

    Raises:
        FileNotFoundError: no such schema file.
    """
    stem = name.removesuffix(".schema.json")
    loaded: dict[str, Any] = json.loads((directory / file_name(stem)).read_text("utf-8"))
    return loaded


if __name__ == "__main__":
    for written_path in write_all():
        print(written_path)
