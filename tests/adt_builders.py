"""Canonical ADT events for tests, built field by field (no HL7 parsing involved)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from schemas.adt_event import AdtEvent

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday


def adt(trigger: str, control_id: str, *, mrn: str = "1001", authority: str = "GENHOSP",
        facility: str = "GENHOSP", patient_class: str | None = "E", visit: str | None = "V1",
        at: datetime = T0, admitted_at: datetime | None = None,
        discharged_at: datetime | None = None, disposition: str | None = None,
        location: str | None = "ED", service: str | None = None, family: str = "DOE",
        given: str = "JANE", birth_date: date | None = date(1960, 1, 2), sex: str = "F",
        phone: str | None = "5551234567", zip_code: str | None = "12345",
        prior: list[tuple[str, str]] | None = None, died: bool | None = None,
        diagnoses: list[str] | None = None, message_id: int = 1, **visit_extra: Any) -> AdtEvent:
    """One ADT event for patient ``mrn@authority`` at ``facility``; times default to ``at``."""
    visit_fields: dict[str, Any] = {
        "patient_class": patient_class, "visit_number": visit,
        "location": {"point_of_care": location, "facility": None} if location else None,
        "hospital_service": service, "admitted_at": admitted_at, "discharged_at": discharged_at,
        "discharge_disposition": disposition, **visit_extra,
    }
    doc: dict[str, Any] = {
        "event_id": f"{facility}|{control_id}", "message_id": message_id,
        "patient_key": f"{mrn}@{authority}", "received_at": at,
        "facility_time_zone": "America/New_York",
        "header": {"message_type": "ADT", "trigger_event": trigger, "control_id": control_id,
                   "sending_facility": facility, "message_time": at},
        "event": {"event_type_code": trigger, "recorded_at": at, "occurred_at": at},
        "patient": {
            "identifiers": [{"value": mrn, "assigning_authority": authority}],
            "name": {"family": family, "given": given}, "birth_date": birth_date, "sex": sex,
            "address": {"zip": zip_code} if zip_code else None,
            "phones": [phone] if phone else [], "death_indicator": died,
        },
        "visit": visit_fields,
        "diagnoses": [{"code": c, "diagnosis_type": "F", "priority": "1" if i == 0 else None}
                      for i, c in enumerate(diagnoses or [])],
        "merge": {"prior_identifiers": [{"value": v, "assigning_authority": a} for v, a in prior]}
        if prior else None,
    }
    return AdtEvent.model_validate(doc)
