"""Canonical event models (schema version 1): the ADT event, the raw envelope, the dead letter.

These pydantic models are the contract between the listener and the processors. They are frozen
and reject unknown keys; every datetime is timezone-aware and serialises as ISO 8601 with its
offset. Optional scalars are None, never ''. The JSON Schema files next to this module are
generated from these models (see :mod:`schemas.json_schemas`).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

SCHEMA_VERSION: Literal[1] = 1


class _Frozen(BaseModel):
    # Serialised events always carry every key, so the generated schema marks them required.
    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_serialization_defaults_required=True
    )


class Identifier(_Frozen):
    """One CX identifier (PID-3, MRG-1)."""

    value: str  # CX-1
    assigning_authority: str | None = None  # CX-4.1, else CX-4.2
    identifier_type: str | None = None  # CX-5 (table 0203: MR, PI, SS...)
    assigning_facility: str | None = None  # CX-6.1


class Header(_Frozen):
    """MSH."""

    sending_application: str | None = None  # MSH-3.1
    sending_facility: str | None = None  # MSH-4.1
    receiving_application: str | None = None  # MSH-5.1
    receiving_facility: str | None = None  # MSH-6.1
    message_time: AwareDatetime | None = None  # MSH-7
    message_type: str  # MSH-9.1 (MSG.1)
    trigger_event: str | None = None  # MSH-9.2 (MSG.2)
    message_structure: str | None = None  # MSH-9.3 (MSG.3)
    control_id: str | None = None  # MSH-10
    version: str | None = None  # MSH-12.1
    processing_id: str | None = None  # MSH-11.1
    character_set: str | None = None  # MSH-18 (first repetition)


class EventInfo(_Frozen):
    """EVN. EVN-1 is informational only: routing uses MSH-9."""

    event_type_code: str | None = None  # EVN-1
    recorded_at: AwareDatetime | None = None  # EVN-2
    occurred_at: AwareDatetime | None = None  # EVN-6
    event_facility: str | None = None  # EVN-7.1


class PersonName(_Frozen):
    """XPN (PID-5, first repetition)."""

    family: str | None = None  # XPN-1.1
    given: str | None = None  # XPN-2
    middle: str | None = None  # XPN-3
    suffix: str | None = None  # XPN-4
    prefix: str | None = None  # XPN-5


class Address(_Frozen):
    """XAD (PID-11, first repetition)."""

    street: str | None = None  # XAD-1.1
    other: str | None = None  # XAD-2
    city: str | None = None  # XAD-3
    state: str | None = None  # XAD-4
    zip: str | None = None  # XAD-5
    country: str | None = None  # XAD-6


class Patient(_Frozen):
    """PID (the first PID of the message); empty when the message has no PID."""

    identifiers: tuple[Identifier, ...] = ()  # PID-3, every repetition with a CX-1
    name: PersonName | None = None  # PID-5
    birth_date: dt.date | None = None  # PID-7
    sex: str | None = None  # PID-8
    address: Address | None = None  # PID-11
    phones: tuple[str, ...] = ()  # PID-13 XTN-1 (or XTN-12), every repetition
    account_number: str | None = None  # PID-18.1
    death_time: AwareDatetime | None = None  # PID-29
    death_indicator: bool | None = None  # PID-30 (Y/N)


class Provider(_Frozen):
    """XCN: a clinician (PD1-4, ROL-4, PV1-7, PV1-17)."""

    id: str | None = None  # XCN-1
    family: str | None = None  # XCN-2.1
    given: str | None = None  # XCN-3


class Role(_Frozen):
    """ROL."""

    role_code: str | None = None  # ROL-3.1
    person: Provider | None = None  # ROL-4


class Location(_Frozen):
    """PL (PV1-3, PV1-6)."""

    point_of_care: str | None = None  # PL.1
    room: str | None = None  # PL.2
    bed: str | None = None  # PL.3
    facility: str | None = None  # PL.4 (HD.1)
    building: str | None = None  # PL.7
    floor: str | None = None  # PL.8


class CodedValue(_Frozen):
    """CWE/CE."""

    code: str | None = None  # CWE.1
    text: str | None = None  # CWE.2
    coding_system: str | None = None  # CWE.3


class Visit(_Frozen):
    """PV1 (with PV2-3)."""

    patient_class: str | None = None  # PV1-2
    location: Location | None = None  # PV1-3
    admission_type: str | None = None  # PV1-4
    prior_location: Location | None = None  # PV1-6
    attending_doctor: Provider | None = None  # PV1-7
    hospital_service: str | None = None  # PV1-10
    admit_source: str | None = None  # PV1-14
    admitting_doctor: Provider | None = None  # PV1-17
    visit_number: str | None = None  # PV1-19.1
    discharge_disposition: str | None = None  # PV1-36 (UB-04 patient status)
    discharged_to_location: str | None = None  # PV1-37.1
    admitted_at: AwareDatetime | None = None  # PV1-44
    discharged_at: AwareDatetime | None = None  # PV1-45
    admit_reason: CodedValue | None = None  # PV2-3


class Diagnosis(_Frozen):
    """DG1."""

    code: str | None = None  # DG1-3.1
    text: str | None = None  # DG1-3.2, else DG1-4
    coding_system: str | None = None  # DG1-3.3
    diagnosis_type: str | None = None  # DG1-6 (A admitting, W working, F final)
    priority: str | None = None  # DG1-15 (1 = principal)


class Insurance(_Frozen):
    """IN1."""

    plan_id: str | None = None  # IN1-2.1
    company_id: str | None = None  # IN1-3.1
    company_name: str | None = None  # IN1-4.1
    member_id: str | None = None  # IN1-49.1, else IN1-36


class Merge(_Frozen):
    """MRG."""

    prior_identifiers: tuple[Identifier, ...] = ()  # MRG-1, every repetition
    prior_account: str | None = None  # MRG-3.1
    prior_visit_number: str | None = None  # MRG-5.1


class AdtEvent(_Frozen):
    """One ADT message as a canonical event.

    ``event_id`` is deterministic (``"{sending_facility}|{control_id}"``, or ``"msg-{message_id}"``
    without a control id) so a replay produces the same id. ``patient_key`` is the Kafka key:
    ``value@authority`` of the first identifier.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str
    message_id: int  # message store id
    patient_key: str
    received_at: AwareDatetime
    facility_time_zone: str  # IANA name used for timestamps without an offset
    header: Header
    event: EventInfo | None = None
    patient: Patient
    primary_care_provider: Provider | None = None  # PD1-4
    roles: tuple[Role, ...] = ()
    visit: Visit | None = None
    diagnoses: tuple[Diagnosis, ...] = ()
    insurance: tuple[Insurance, ...] = ()
    merge: Merge | None = None


class RawMessage(_Frozen):
    """The envelope the listener publishes on ``adt.raw.v1`` for every accepted message."""

    schema_version: Literal[1] = SCHEMA_VERSION
    message_id: int
    sending_facility: str  # MSH-4.1
    control_id: str  # MSH-10
    message_type: str  # MSH-9 (message type and trigger, e.g. ADT^A01)
    received_at: AwareDatetime
    charset: str  # the Python codec the bytes were decoded with
    text: str  # the decoded message


class DeadLetter(_Frozen):
    """A message that could not be turned into an event, with the reason and where it failed."""

    schema_version: Literal[1] = SCHEMA_VERSION
    message_id: int
    event_id: str | None = None
    facility: str | None = None
    control_id: str | None = None
    reason: str
    segment: str | None = None
    field: int | None = None
    received_at: AwareDatetime
    deadlettered_at: AwareDatetime


# ---- A lean view of an ADT event, for consumers that first need only whose event it is.


class _View(BaseModel):
    # A view of an AdtEvent's JSON: the keys it does not name are skipped, not rejected.
    model_config = ConfigDict(frozen=True, extra="ignore")


class HeaderView(_View):
    sending_facility: str | None = None  # MSH-4.1


class PatientView(_View):
    identifiers: tuple[Identifier, ...] = ()  # PID-3
    birth_date: dt.date | None = None  # PID-7


class InsuranceView(_View):
    plan_id: str | None = None  # IN1-2.1
    company_id: str | None = None  # IN1-3.1
    company_name: str | None = None  # IN1-4.1
    member_id: str | None = None  # IN1-49.1, else IN1-36


class AdtEventView(_View):
    """What an ``adt.events.v1`` event says about whose it is (its ids, facility, patient
    identifiers, birth date, insurance member ids), read from the event's JSON without building
    the rest: about a third of the full :class:`AdtEvent`'s cost. Its fields have the same
    names and types as the event's, so code reading only these takes either."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str
    message_id: int
    received_at: AwareDatetime
    header: HeaderView
    patient: PatientView
    insurance: tuple[InsuranceView, ...] = ()
