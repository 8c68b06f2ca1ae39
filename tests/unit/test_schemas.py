"""Event models and their committed JSON Schema files: no drift, samples validate, strictness."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel, ValidationError

from schemas import json_schemas
from schemas.adt_event import (
    SCHEMA_VERSION,
    AdtEvent,
    DeadLetter,
    EventInfo,
    Header,
    Identifier,
    Patient,
    PersonName,
    RawMessage,
    Visit,
)
from schemas.episode_event import EpisodeEvent, EpisodeSnapshot
from schemas.task_event import Notification, TaskEvent, TaskSnapshot

AT = datetime(2024, 3, 10, 3, 30, tzinfo=timezone(timedelta(hours=-4)))
NAMES = list(json_schemas.MODELS)


def _event(**changes: Any) -> AdtEvent:
    fields: dict[str, Any] = {
        "event_id": "FAC1|CTRL1",
        "message_id": 42,
        "patient_key": "MRN1@HOSP",
        "received_at": AT,
        "facility_time_zone": "America/New_York",
        "header": Header(message_type="ADT", trigger_event="A03", control_id="CTRL1",
                         sending_facility="FAC1", message_time=AT),
        "event": EventInfo(event_type_code="A03", recorded_at=AT),
        "patient": Patient(
            identifiers=(Identifier(value="MRN1", assigning_authority="HOSP"),),
            name=PersonName(family="DOE", given="JANE"),
            birth_date=date(1980, 1, 1),
        ),
        "visit": Visit(patient_class="I", discharged_at=AT, discharge_disposition="01"),
    }
    fields.update(changes)
    return AdtEvent(**fields)


RAW = RawMessage(message_id=42, sending_facility="FAC1", control_id="CTRL1",
                 message_type="ADT^A03", received_at=AT, charset="utf-8",
                 text="MSH|^~\\&|APP|FAC1|||20240310033000||ADT^A03|CTRL1|P|2.5\rPID|1||MRN1")
DEAD = DeadLetter(message_id=42, event_id="FAC1|CTRL1", facility="FAC1", control_id="CTRL1",
                  reason='PV1-45 discharge time "2023X" is not a valid HL7 timestamp',
                  segment="PV1", field=45, received_at=AT, deadlettered_at=AT)
EPISODE_EVENT = EpisodeEvent(
    event_id="FAC1|CTRL1#0", type="PatientDischarged", member_id="M1", episode_id="ep-1",
    occurred_at=AT, source_event_id="FAC1|CTRL1", summary="discharged from inpatient",
    episode=EpisodeSnapshot(id="ep-1", member_id="M1", patient_identifier="MRN1@HOSP",
                            kind="inpatient", status="discharged", facility="FAC1",
                            facility_key="FAC1", admitted_at=AT - timedelta(days=3),
                            discharged_at=AT, disposition="01", tier="high",
                            flags=("readmission_30d",), lace_total=9),
    detail={"disposition": "01", "corrected": False},
)
TASK = TaskSnapshot(id="t-1", episode_id="ep-1", member_id="M1", rule_id="post_discharge_contact",
                    type="post_discharge_contact", title="Post-discharge contact", status="open",
                    priority="normal", assignee_id="C1", clinical_at=AT, due_at=AT + timedelta(days=2))
TASK_EVENT = TaskEvent(event_id="FAC1|CTRL1#0/t-1/escalate-1", type="TaskEscalated", member_id="M1",
                       task_id="t-1", episode_id="ep-1", at=AT, actor="system",
                       summary="escalated to the supervisor", task=TASK, detail={"level": 1})
NOTE = Notification(id="n-1", kind="task_escalated", member_id="M1", recipient_id="S1",
                    channel="email", task_id="t-1", episode_id="ep-1",
                    task_type="post_discharge_contact", title="Post-discharge contact",
                    due_at=AT, escalation_level=1, link="http://x/inbox#task-t-1", created_at=AT)
SAMPLES: dict[str, BaseModel] = {"adt_event.v1": _event(), "raw_message.v1": RAW,
                                 "deadletter.v1": DEAD, "episode_event.v1": EPISODE_EVENT,
                                 "task_event.v1": TASK_EVENT, "notification.v1": NOTE}


@pytest.mark.parametrize("name", NAMES)
def test_committed_file_matches_the_model(name: str) -> None:
    path = json_schemas.SCHEMA_DIR / json_schemas.file_name(name)
    assert path.is_file(), f"{path.name} is missing: run python -m schemas.json_schemas"
    assert path.read_text("utf-8") == json_schemas.render(name), (
        f"{path.name} drifted from the model: run python -m schemas.json_schemas")


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_valid_and_identified(name: str) -> None:
    schema = json_schemas.load(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith(f"/{name}.schema.json")
    assert schema["title"] and schema["additionalProperties"] is False
    assert json_schemas.load(json_schemas.file_name(name)) == schema


def test_write_all(tmp_path: Path) -> None:
    written = json_schemas.write_all(tmp_path)
    assert sorted(p.name for p in written) == sorted(json_schemas.file_name(n) for n in NAMES)
    for name in NAMES:
        assert json_schemas.load(name, tmp_path) == json_schemas.generate(name)


@pytest.mark.parametrize("name", NAMES)
def test_sample_validates_and_round_trips(name: str) -> None:
    sample = SAMPLES[name]
    document = json.loads(sample.model_dump_json())
    jsonschema.Draft202012Validator(json_schemas.load(name)).validate(document)
    assert type(sample).model_validate_json(sample.model_dump_json()) == sample
    assert document["schema_version"] == SCHEMA_VERSION == 1


@pytest.mark.parametrize(
    ("name", "mutate"),
    [
        ("adt_event.v1", lambda d: d.pop("patient_key")),
        ("adt_event.v1", lambda d: d.update(surprise=1)),
        ("adt_event.v1", lambda d: d.update(schema_version=2)),
        ("adt_event.v1", lambda d: d["patient"]["identifiers"][0].pop("value")),
        ("adt_event.v1", lambda d: d["visit"].update(patient_class=7)),
        ("raw_message.v1", lambda d: d.pop("text")),
        ("deadletter.v1", lambda d: d.update(field="forty-five")),
        ("episode_event.v1", lambda d: d.update(type="EpisodeExploded")),
        ("task_event.v1", lambda d: d.update(type="TaskForgotten")),
        ("notification.v1", lambda d: d.update(channel="pager")),
    ],
)
def test_schema_rejects(name: str, mutate: Any) -> None:
    document = json.loads(SAMPLES[name].model_dump_json())
    mutate(document)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, json_schemas.load(name))
    with pytest.raises(ValidationError):
        type(SAMPLES[name]).model_validate(document)


def test_datetimes_serialise_with_offset() -> None:
    document = json.loads(_event(received_at=datetime(2024, 7, 15, 12, tzinfo=UTC))
                          .model_dump_json())
    assert document["received_at"] == "2024-07-15T12:00:00Z"
    assert document["visit"]["discharged_at"] == "2024-03-10T03:30:00-04:00"
    assert document["patient"]["birth_date"] == "1980-01-01"


@pytest.mark.parametrize(
    "changes",
    [
        {"received_at": datetime(2024, 7, 15, 12)},  # naive
        {"header": {"message_type": "ADT", "message_time": "2024-07-15T12:00:00"}},  # naive
        {"schema_version": 2},
        {"unknown": "x"},
        {"message_id": "not a number"},
    ],
)
def test_model_rejects(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _event(**changes)


def test_models_are_frozen() -> None:
    event = _event()
    with pytest.raises(ValidationError):
        event.__setattr__("patient_key", "other")
    with pytest.raises(ValidationError):
        DEAD.__setattr__("reason", "other")


def test_every_key_is_serialised_and_required() -> None:
    """Consumers may rely on every key being present, null or not."""
    schema = json_schemas.load("adt_event.v1")
    assert set(schema["required"]) == set(AdtEvent.model_fields)
    assert set(_event().model_dump()) == set(AdtEvent.model_fields)
