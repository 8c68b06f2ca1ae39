"""Canonical ADT events for tests, built field by field (no HL7 parsing involved)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from schemas.adt_event import AdtEvent
from transitions.model import Member, MemberIdentifier

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


# M2, M3 and M9 of :func:`messy_batch` (M1 is each test module's own).
MESSY_MEMBERS = (
    Member("M2", "ROE", "ANN", date(1971, 3, 4), "F", "", "",
           (MemberIdentifier("1002", "GENHOSP"),), "low", "C2"),
    Member("M3", "POE", "AL", date(1980, 7, 8), "M", "", "",
           (MemberIdentifier("1003", "GENHOSP"),), "medium", "C1"),
    Member("M9", "DOE", "JANE", date(1960, 1, 2), "F", "", "",
           (MemberIdentifier("2002", "GENHOSP"),), "low", "C2"),
)


# One batch of a messy feed for four members, interleaved: an ED visit admitted at the same
# facility, a discharge before its admission, an A08 after the A03, a resend, a cancelled and
# a reopened discharge, a readmission that raises the tier (the member is read again for the
# next event), a visit number of another member's episode (review), unknown patients. For
# member M1 (1001@GENHOSP, DOE JANE) of the tests and MESSY_MEMBERS.
def messy_batch(with_merge: bool) -> list[AdtEvent]:
    h = timedelta(hours=1)
    L0 = T0.astimezone(timezone(timedelta(hours=-5)))  # noqa: N806 - times as a feed sends them
    feed = [
        adt("A04", "b1", visit="V1", at=L0),
        adt("A04", "b2", mrn="1002", family="ROE", given="ANN", visit="V7", at=L0),
        adt("A01", "b3", patient_class="I", visit="V1", at=L0 + 5 * h, location="4W"),
        adt("A03", "b4", mrn="1002", family="ROE", given="ANN", visit="V7", at=L0 + 6 * h,
            discharged_at=L0 + 6 * h, disposition="01"),
        adt("A08", "b5", mrn="1002", family="ROE", given="ANN", visit="V7", at=L0 + 7 * h,
            location="ED2"),
        adt("A04", "b6", mrn="2002", family="DOE", given="JANE", visit="V5", at=L0 + h,
            phone=None, zip_code=None),
        adt("A02", "b7", patient_class="I", visit="V1", at=L0 + 24 * h, location="5E"),
        adt("A02", "b7-resend", patient_class="I", visit="V1", at=L0 + 24 * h, location="5E"),
        adt("A03", "b8", mrn="1003", family="POE", given="AL", visit="V3", patient_class="I",
            at=L0 + 30 * h, discharged_at=L0 + 30 * h, disposition="01"),
        adt("A01", "b9", mrn="1003", family="POE", given="AL", visit="V3", patient_class="I",
            at=L0 + 2 * h),
        adt("A03", "b11", patient_class="I", visit="V1", at=L0 + 96 * h,
            discharged_at=L0 + 96 * h, disposition="01", diagnoses=["I50.9"]),
        adt("A13", "b12", patient_class="I", visit="V1", at=L0 + 97 * h),
        adt("A03", "b13", patient_class="I", visit="V1", at=L0 + 98 * h,
            discharged_at=L0 + 98 * h, disposition="01"),
        adt("A01", "b14", patient_class="I", visit="V9", at=L0 + 240 * h),
        adt("A08", "b15", patient_class="I", visit="V9", at=L0 + 241 * h, location="6N"),
        # left against advice: a second flag on the readmission, read again by the A08 after it
        adt("A03", "b15a", patient_class="I", visit="V9", at=L0 + 241.5 * h,
            discharged_at=L0 + 241.5 * h, disposition="07"),
        adt("A08", "b15b", patient_class="I", visit="V9", at=L0 + 241.7 * h, location="6S"),
        adt("A04", "b16", mrn="1002", family="ROE", given="ANN", visit="V1", at=L0 + 242 * h),
        adt("A04", "b17", mrn="999", family="OTHER", given="PAT", birth_date=date(1990, 5, 5)),
        adt("A11", "b18", mrn="1003", family="POE", given="AL", visit="V3", patient_class="I",
            at=L0 + 243 * h),
    ]
    if with_merge:
        feed.insert(10, adt("A40", "b10", visit=None, prior=[("2002", "GENHOSP")],
                            at=L0 + 48 * h))
    return [e.model_copy(update={"message_id": n}) for n, e in enumerate(feed, 1)]
