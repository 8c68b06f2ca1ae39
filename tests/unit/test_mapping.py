"""ER7 message -> AdtEvent: the public corpus, escapes, repetitions, delimiters, timestamps."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pytest

from adt_listener.hl7.charset import decode_message
from adt_listener.hl7.er7 import Message
from adt_listener.mapping import MappingError, patient_key, to_adt_event
from schemas.adt_event import AdtEvent, Identifier, Provider
from schemas.json_schemas import load

TZ = ZoneInfo("America/New_York")
RECEIVED = datetime(2024, 7, 15, 12, 0, tzinfo=UTC)
CORPUS = Path(__file__).parents[2].parent / "shared" / "corpus"
MSGS = CORPUS / "msgs"

# ADT files with a PID-3 that are nevertheless invalid, and the field the mapper must name.
KNOWN_INVALID = {
    "hapi__NewPipeParserTest__7.hl7": ("PV1", 44),  # PV1-44 "43865896": month 58
}


def _map(text: str, *, message_id: int = 42) -> AdtEvent:
    return to_adt_event(Message(text), message_id=message_id, received_at=RECEIVED, tz=TZ)


def _messages(path: Path) -> list[str]:
    """The messages in a corpus file; batch envelopes (FHS/BHS/BTS/FTS) are dropped."""
    text, _ = decode_message(path.read_bytes())
    groups: list[list[str]] = []
    for line in re.split(r"\r\n|\r|\n", text.lstrip("\ufeff")):
        if line.startswith("MSH"):
            groups.append([line])
        elif line[:3] in ("FHS", "BHS", "BTS", "FTS") or not line.strip():
            continue
        elif groups:
            groups[-1].append(line)
    return ["\r".join(group) for group in groups]


def _has_pid3(message: Message) -> bool:
    return any(message.decode(message.component(r, 1)) for r in message.repetitions("PID", 3))


def _corpus_cases(with_pid3: bool) -> list[Any]:
    """(file name, message text) for every ADT message in the corpus with (or without) PID-3."""
    if not MSGS.is_dir():
        return [pytest.param(None, None, id="corpus-missing")]
    cases = []
    for path in sorted(MSGS.glob("*.hl7")):
        for n, text in enumerate(_messages(path)):
            message = Message(text)
            if message.get("MSH", 9) == "ADT" and _has_pid3(message) == with_pid3:
                cases.append(pytest.param(path.name, text, id=f"{path.name}#{n}"))
    return cases


CORPUS_CASES = _corpus_cases(with_pid3=True)
NO_PID3_CASES = _corpus_cases(with_pid3=False)
EVENT_SCHEMA = jsonschema.Draft202012Validator(load("adt_event.v1"))


def _require_corpus() -> None:
    if not MSGS.is_dir():
        pytest.fail(f"the shared HL7 corpus is missing: expected it at {MSGS}")


def test_corpus_is_present_and_large() -> None:
    _require_corpus()
    assert len(CORPUS_CASES) > 150, "fewer ADT messages with a PID-3 than the corpus README lists"


@pytest.mark.parametrize(("name", "text"), CORPUS_CASES)
def test_corpus_adt_maps_and_round_trips(name: str | None, text: str | None) -> None:
    _require_corpus()
    assert name is not None and text is not None
    if name in KNOWN_INVALID:
        segment, field = KNOWN_INVALID[name]
        with pytest.raises(MappingError) as info:
            _map(text)
        assert (info.value.segment, info.value.field) == (segment, field)
        return
    event = _map(text)
    wire = event.model_dump_json()
    assert AdtEvent.model_validate_json(wire) == event
    EVENT_SCHEMA.validate(event.model_dump(mode="json"))
    assert event.patient_key and event.header.message_type == "ADT"
    assert event.patient.identifiers or event.merge is not None


@pytest.mark.parametrize(("name", "text"), NO_PID3_CASES)
def test_corpus_adt_without_pid3_needs_mrg(name: str | None, text: str | None) -> None:
    _require_corpus()
    assert name is not None and text is not None
    message = Message(text)
    if message.repetitions("MRG", 1):
        assert _map(text).patient_key
        return
    with pytest.raises(MappingError) as info:
        _map(text)
    assert (info.value.segment, info.value.field) == ("PID", 3)


def _msg(*segments: str) -> str:
    return "\r".join(segments)


def _seg(name: str, fields: dict[int, str]) -> str:
    """A segment with ``fields[n]`` as field n (default delimiters), empty elsewhere."""
    values = [fields.get(n, "") for n in range(1, max(fields) + 1)]
    return "|".join([name, *values])


MSH = "MSH|^~\\&|ADT1|FAC1|RECV|RFAC|20240715133045||ADT^A01^ADT_A01|CTRL1|P|2.5.1"
EVN = "EVN|A01|20240715133000"
PID = "PID|1||MRN1^^^HOSP^MR||DOE^JANE||19800101|F"
PV1 = "PV1|1|I|4W^401^A^FAC1||||1234^WELBY^MARCUS"


def _corpus(name: str) -> AdtEvent:
    _require_corpus()
    return _map(_messages(MSGS / name)[0])


# --- header, routing, ids ----------------------------------------------------------------------


def test_routes_on_msh9_not_evn1() -> None:
    event = _map(_msg(MSH.replace("ADT^A01^ADT_A01", "ADT^A03^ADT_A03"), EVN, PID, PV1))
    assert (event.header.message_type, event.header.trigger_event) == ("ADT", "A03")
    assert event.header.message_structure == "ADT_A03"
    assert event.event is not None and event.event.event_type_code == "A01"


@pytest.mark.parametrize(
    ("msh", "expected"),
    [
        (MSH, "FAC1|CTRL1"),
        (MSH.replace("|CTRL1|", "||"), "msg-42"),
        (MSH.replace("|FAC1|", "|^1.2.3^ISO|"), "1.2.3|CTRL1"),  # HD.2 when HD.1 is empty
    ],
)
def test_event_id(msh: str, expected: str) -> None:
    assert _map(_msg(msh, PID)).event_id == expected


def test_header_fields() -> None:
    header = _map(_msg(MSH + "||||||UNICODE UTF-8~8859/1", PID)).header
    assert header.model_dump(exclude={"message_time"}) == {
        "sending_application": "ADT1", "sending_facility": "FAC1",
        "receiving_application": "RECV", "receiving_facility": "RFAC",
        "message_type": "ADT", "trigger_event": "A01", "message_structure": "ADT_A01",
        "control_id": "CTRL1", "version": "2.5.1", "processing_id": "P",
        "character_set": "UNICODE UTF-8",
    }


def test_empty_message_type_is_refused() -> None:
    with pytest.raises(MappingError) as info:
        _map(_msg(MSH.replace("ADT^A01^ADT_A01", ""), PID))
    assert (info.value.segment, info.value.field) == ("MSH", 9)


def test_optional_segments_absent() -> None:
    event = _map(_msg(MSH, PID))
    assert event.event is None and event.visit is None and event.merge is None
    assert event.primary_care_provider is None
    assert (event.roles, event.diagnoses, event.insurance) == ((), (), ())


# --- patient identifiers and routing key -------------------------------------------------------


@pytest.mark.parametrize(
    ("pid3", "mrg1", "key"),
    [
        ("MRN1^^^HOSP^MR", None, "MRN1@HOSP"),
        ("MRN1", None, "MRN1@"),
        ("MRN1^^^&1.2.840.1&ISO^MR", None, "MRN1@1.2.840.1"),  # CX-4.2 when CX-4.1 is empty
        ('""~MRN2^^^HOSP', None, "MRN2@HOSP"),  # explicit null repetition skipped
        ("^^^HOSP~MRN3^^^OTHER", None, "MRN3@OTHER"),  # first repetition WITH a value
        ("", "OLD1^^^HOSP", "OLD1@HOSP"),
        ("MRN1^^^HOSP", "OLD1^^^HOSP", "MRN1@HOSP"),
    ],
)
def test_patient_key(pid3: str, mrg1: str | None, key: str) -> None:
    segments = [MSH, f"PID|1||{pid3}||DOE^JANE"]
    if mrg1 is not None:
        segments.append(f"MRG|{mrg1}")
    assert _map(_msg(*segments)).patient_key == key


def test_patient_key_function() -> None:
    old = Identifier(value="OLD", assigning_authority="A")
    assert patient_key([], [old]) == "OLD@A"
    assert patient_key([], []) == ""


@pytest.mark.parametrize(
    "segments",
    [
        (MSH, "PID|1||||DOE^JANE"),
        (MSH, 'PID|1||""||DOE^JANE'),
        (MSH, "PID|1||^^^HOSP||DOE^JANE", "MRG|^^^HOSP"),
        (MSH, EVN),
    ],
)
def test_no_identifier_at_all_raises(segments: tuple[str, ...]) -> None:
    with pytest.raises(MappingError) as info:
        _map(_msg(*segments))
    assert (info.value.segment, info.value.field) == ("PID", 3)
    assert "PID-3" in info.value.reason


def test_every_pid3_repetition_with_its_authority() -> None:
    identifiers = _corpus("fhirconv__ADT-A01-01__1.hl7").patient.identifiers
    assert identifiers == (
        Identifier(value="PATID1234", assigning_authority="test1", identifier_type="MR",
                   assigning_facility="GOOD HEALTH HOSPITAL"),
        Identifier(value="123456789", assigning_authority="USSSA", identifier_type="SS"),
    )


def test_inline_pid3_repetitions() -> None:
    pid = "PID|1||A1^^^AUTH1^MR^FAC^A~B2^^^&2.16.840.1&ISO^PI~C3^^^^SS"
    assert [i.model_dump() for i in _map(_msg(MSH, pid)).patient.identifiers] == [
        {"value": "A1", "assigning_authority": "AUTH1", "identifier_type": "MR",
         "assigning_facility": "FAC"},
        {"value": "B2", "assigning_authority": "2.16.840.1", "identifier_type": "PI",
         "assigning_facility": None},
        {"value": "C3", "assigning_authority": None, "identifier_type": "SS",
         "assigning_facility": None},
    ]


def test_merge() -> None:
    event = _map(_msg(MSH.replace("A01^ADT_A01", "A40^ADT_A39"), PID,
                      "MRG|OLD1^^^HOSP^MR~OLD2^^^SSA^SS||ACCT9||VN7"))
    assert event.merge is not None
    assert [i.value for i in event.merge.prior_identifiers] == ["OLD1", "OLD2"]
    assert event.merge.prior_identifiers[1].assigning_authority == "SSA"
    assert (event.merge.prior_account, event.merge.prior_visit_number) == ("ACCT9", "VN7")


# --- escapes and delimiters --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pid5", "family", "given"),
    [
        ("DOE\\T\\SMITH^JOHN\\S\\JANE", "DOE&SMITH", "JOHN^JANE"),
        ("O\\F\\BRIEN^A\\R\\B", "O|BRIEN", "A~B"),
        ("BACK\\E\\SLASH^X\\.br\\Y", "BACK\\SLASH", "X\nY"),
        ('""^ANN', None, "ANN"),  # explicit null
        ("  ^ANN", None, "ANN"),  # blanks
    ],
)
def test_escapes_decoded(pid5: str, family: str | None, given: str | None) -> None:
    name = _map(_msg(MSH, f"PID|1||MRN1||{pid5}")).patient.name
    assert name is not None and (name.family, name.given) == (family, given)


def test_escapes_decoded_in_corpus() -> None:
    name = _corpus("rethink__edge-escaped-delimiters__1.hl7").patient.name
    assert name is not None and (name.family, name.given) == ("DOE&SMITH", "JOHN^JANE")
    visit = _corpus("fhirconv__ADT-A01-01__1.hl7").visit
    assert visit is not None
    assert visit.admit_source == "NHS Provider-General (inc.A&E-this Hosp)"  # PV1-14 \T\


def test_custom_delimiters() -> None:
    event = _corpus("rethink__edge-custom-delimiters__1.hl7")  # MSH#!@%*
    assert (event.header.message_type, event.header.trigger_event) == ("ADT", "A01")
    assert event.event_id == "FAC|MSG007"
    assert event.patient.identifiers == (Identifier(value="12345", assigning_authority="MRN"),)
    assert event.patient_key == "12345@MRN"
    assert event.patient.name is not None
    assert (event.patient.name.family, event.patient.name.given) == ("DOE", "JOHN")
    assert event.patient.birth_date == date(1980, 1, 1)
    assert event.patient.sex == "M"


def test_caret_as_field_separator() -> None:
    event = _corpus("hapi__segmentfinder_a24__1.hl7")  # MSH^~|\&
    assert (event.header.message_type, event.header.trigger_event) == ("ADT", "A24")
    assert event.patient_key == "11111@FOO"


def test_inline_custom_delimiters_with_escapes() -> None:
    text = _msg("MSH#!@%*#APP#FAC#R#RF#20240715133045##ADT!A08#C9#P#2.5",
                "PID#1##X1!!!AU*1.2!MR@X2!!!AU2##SMITH%T%JONES!ANN")
    event = _map(text)
    assert [(i.value, i.assigning_authority) for i in event.patient.identifiers] == [
        ("X1", "AU"), ("X2", "AU2")]
    assert event.patient.name is not None and event.patient.name.family == "SMITH*JONES"


# --- timestamps --------------------------------------------------------------------------------


def _ts_message(msh7: str = "", evn2: str = "", evn6: str = "", pid7: str = "",
                pid29: str = "", pv1_44: str = "", pv1_45: str = "") -> str:
    pid = _seg("PID", {1: "1", 3: "MRN1^^^HOSP", 5: "DOE^JANE", 7: pid7, 8: "F", 29: pid29})
    pv1 = _seg("PV1", {1: "1", 2: "I", 44: pv1_44, 45: pv1_45})
    msh = MSH.replace("20240715133045", msh7)
    return _msg(msh, f"EVN|A01|{evn2}||||{evn6}", pid, pv1)


def _ts_fields(event: AdtEvent) -> dict[str, datetime | None]:
    assert event.event is not None and event.visit is not None
    return {
        "msh7": event.header.message_time, "evn2": event.event.recorded_at,
        "evn6": event.event.occurred_at, "pid29": event.patient.death_time,
        "pv1_44": event.visit.admitted_at, "pv1_45": event.visit.discharged_at,
    }


TS_PATHS = {
    "msh7": ("header", "message_time"), "evn2": ("event", "recorded_at"),
    "evn6": ("event", "occurred_at"), "pid29": ("patient", "death_time"),
    "pv1_44": ("visit", "admitted_at"), "pv1_45": ("visit", "discharged_at"),
}


@pytest.mark.parametrize(
    ("field", "value", "iso"),
    [
        ("msh7", "20240715133045", "2024-07-15T13:30:45-04:00"),  # EDT
        ("evn2", "20240115133045", "2024-01-15T13:30:45-05:00"),  # EST
        ("evn6", "20240715133045+0215", "2024-07-15T13:30:45+02:15"),  # offset kept
        ("pid29", "202407151330-0000", "2024-07-15T13:30:00Z"),
        ("pv1_44", "20240310023000", "2024-03-10T03:30:00-04:00"),  # DST gap: forward
        ("pv1_45", "20241103013000", "2024-11-03T01:30:00-04:00"),  # DST fold: first
        ("pv1_45", "20240310013000", "2024-03-10T01:30:00-05:00"),  # DST day, before
        ("pv1_44", "20240715133045.25", "2024-07-15T13:30:45.250000-04:00"),
        ("pv1_44", "2013", "2013-01-01T00:00:00-05:00"),
        ("pv1_45", '""', None),  # explicit null
        ("pv1_45", "", None),
    ],
)
def test_timestamps(field: str, value: str, iso: str | None) -> None:
    event = _map(_ts_message(**{field: value}))
    parsed = _ts_fields(event)[field]
    if iso is not None:
        assert parsed is not None and parsed.utcoffset() is not None
    section, name = TS_PATHS[field]
    assert event.model_dump(mode="json")[section][name] == iso


def test_timestamp_precision_component_ignored() -> None:
    event = _map(_ts_message(pv1_44="20240715133045^S"))
    assert event.visit is not None
    assert event.visit.admitted_at == datetime(2024, 7, 15, 17, 30, 45, tzinfo=UTC)


def test_facility_zone_recorded_and_used() -> None:
    event = to_adt_event(Message(_ts_message(msh7="20240715120000")), message_id=1,
                         received_at=RECEIVED, tz=ZoneInfo("Europe/Paris"))
    assert event.facility_time_zone == "Europe/Paris"
    assert event.header.message_time is not None
    assert event.header.message_time.utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize(
    ("field", "segment", "number", "label"),
    [
        ("msh7", "MSH", 7, "message time"),
        ("evn2", "EVN", 2, "recorded time"),
        ("evn6", "EVN", 6, "event occurred time"),
        ("pid7", "PID", 7, "birth date"),
        ("pid29", "PID", 29, "death time"),
        ("pv1_44", "PV1", 44, "admit time"),
        ("pv1_45", "PV1", 45, "discharge time"),
    ],
)
@pytest.mark.parametrize("bad", ["2023X", "20241301", "20240715+9900"])
def test_bad_timestamp_raises(field: str, segment: str, number: int, label: str,
                              bad: str) -> None:
    with pytest.raises(MappingError) as info:
        _map(_ts_message(**{field: bad}))
    error = info.value
    assert (error.segment, error.field) == (segment, number)
    assert error.reason.startswith(f"{segment}-{number} {label} is not a valid HL7")
    assert bad not in error.reason, "reasons never repeat the value (PHI)"
    assert str(error) == error.reason and isinstance(error, ValueError)


def test_bad_pv1_45_message() -> None:
    with pytest.raises(MappingError, match=r"^PV1-45 discharge time is not a valid HL7 "
                                           r"timestamp") as info:
        _map(_ts_message(pv1_45="2023X"))
    assert (info.value.segment, info.value.field) == ("PV1", 45)


@pytest.mark.parametrize(
    ("pid7", "expected"),
    [("19800101", date(1980, 1, 1)), ("198808181126+0215", date(1988, 8, 18)), ("", None)],
)
def test_birth_date(pid7: str, expected: date | None) -> None:
    assert _map(_ts_message(pid7=pid7)).patient.birth_date == expected


# --- segment contents --------------------------------------------------------------------------


def test_full_a01_from_corpus() -> None:
    event = _corpus("fhirconv__ADT-A01-01__1.hl7")
    patient, visit = event.patient, event.visit
    assert visit is not None and event.event is not None
    assert event.event.event_facility == "Cona_Health"
    assert patient.address is not None
    assert (patient.address.city, patient.address.zip) == ("Ann Arbor", "99999")
    assert patient.phones == ("78788788", "12121212")
    assert (patient.account_number, patient.death_indicator) == ("4000776", True)
    assert event.primary_care_provider == Provider(id="88", family="Hippo", given="rold")
    assert event.roles[0].role_code == "PP"
    assert event.roles[0].person == Provider(id="12377H87", family="Smith", given="John")
    assert visit.location is not None and visit.location.model_dump() == {
        "point_of_care": "HUH AE OMU", "room": "OMU B", "bed": "Bed 03",
        "facility": "HOMERTON UNIVER", "building": "Homerton UH", "floor": "Floor5"}
    assert visit.prior_location is not None and visit.prior_location.room == "136"
    assert (visit.patient_class, visit.admission_type, visit.hospital_service) == ("P", "E", "SUR")
    assert visit.attending_doctor == Provider(id="1122334", family="Alaz", given="Mohammed")
    assert visit.admitting_doctor == Provider(id="37", family="DISNEY", given="WALT")
    assert visit.visit_number == "40007716"
    assert visit.admit_reason is not None and visit.admit_reason.code == "140004"
    assert [d.model_dump() for d in event.diagnoses] == [
        {"code": "422504002", "text": "Ischemic stroke(disorder)", "coding_system": "SCT",
         "diagnosis_type": "A", "priority": "1"}]
    assert [i.model_dump() for i in event.insurance] == [
        {"plan_id": "BAV", "company_id": "IC-1.31",
         "company_name": "Blue Cross Blue Shield of Texas", "member_id": "HMO-12345"}]


@pytest.mark.parametrize(
    ("pl", "expected"),
    [
        ("", None),
        ('""', None),
        ("^^^^^1", None),  # only PL.6 (person location type), which is not mapped
        ("^^^^X^1", None),  # PL.5 and PL.6 only
        ("ED", {"point_of_care": "ED"}),
        ("^^^^^^^F2", {"floor": "F2"}),  # PL.8 alone is a location
        ("^^^&1.2.3&ISO", None),  # PL.4 HD.1 only; the universal id is not mapped
        ("4W^401&X^A~ICU^1^B", {"point_of_care": "4W", "room": "401", "bed": "A"}),  # first rep
        ("\\T\\4W ^ 4\\S\\01 ^A", {"point_of_care": "&4W", "room": "4^01", "bed": "A"}),
    ],
)
def test_location_leaves(pl: str, expected: dict[str, str] | None) -> None:
    """PV1-6 read leaf by leaf: a location exists when a mapped PL component has a value."""
    visit = _map(_msg(MSH, PID, _seg("PV1", {2: "I", 6: pl}))).visit
    assert visit is not None
    if expected is None:
        assert visit.prior_location is None
    else:
        assert visit.prior_location is not None
        values = {k: v for k, v in visit.prior_location.model_dump().items() if v is not None}
        assert values == expected


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("I", "I"),
        (" I ", "I"),
        ('""', None),
        ("I^X~O", "I"),  # component 1 of the first repetition
        ("I&SUB^X", "I"),  # subcomponent 1
        ("\\T\\I", "&I"),  # escapes decoded after splitting
        ("~O", None),
    ],
)
def test_scalar_field_leaf(field: str, expected: str | None) -> None:
    """PV1-2 (read with the segment's other scalar fields): component 1, subcomponent 1 of
    the first repetition, decoded and stripped; the explicit null is None."""
    visit = _map(_msg(MSH, PID, _seg("PV1", {2: field}))).visit
    assert visit is not None and visit.patient_class == expected


def test_discharge_visit_fields() -> None:
    pv1 = _seg("PV1", {
        1: "1", 2: "I", 3: "4W^401^A^FAC1^^^B2^F3", 4: "E", 6: "ED^^^FAC1",
        7: "111^HOUSE^GREG~999^OTHER^DOC", 10: "MED", 14: "7", 17: "222^CUDDY^LISA",
        19: "VN123^^^FAC1", 36: "03", 37: "SNF1^^X", 44: "20240710080000",
        45: "20240715100000",
    })
    visit = _map(_msg(MSH, PID, pv1, "PV2|||R10.9^Abdominal pain^I10")).visit
    assert visit is not None
    assert visit.model_dump(mode="json") == {
        "patient_class": "I",
        "location": {"point_of_care": "4W", "room": "401", "bed": "A", "facility": "FAC1",
                     "building": "B2", "floor": "F3"},
        "admission_type": "E",
        "prior_location": {"point_of_care": "ED", "room": None, "bed": None, "facility": "FAC1",
                           "building": None, "floor": None},
        "attending_doctor": {"id": "111", "family": "HOUSE", "given": "GREG"},
        "hospital_service": "MED",
        "admit_source": "7",
        "admitting_doctor": {"id": "222", "family": "CUDDY", "given": "LISA"},
        "visit_number": "VN123",
        "discharge_disposition": "03",
        "discharged_to_location": "SNF1",
        "admitted_at": "2024-07-10T08:00:00-04:00",
        "discharged_at": "2024-07-15T10:00:00-04:00",
        "admit_reason": {"code": "R10.9", "text": "Abdominal pain", "coding_system": "I10"},
    }


@pytest.mark.parametrize(
    ("dg1", "expected"),
    [
        (_seg("DG1", {1: "1", 2: "I10", 3: "F32.9^Major depression^I10", 5: "20240715",
                      6: "A", 15: "1"}),
         ("F32.9", "Major depression", "I10", "A", "1")),
        ("DG1|2||R51|Headache||W", ("R51", "Headache", None, "W", None)),  # DG1-4 text
        ("DG1|3", None),  # nothing in it: dropped
    ],
)
def test_diagnoses(dg1: str, expected: tuple[str | None, ...] | None) -> None:
    diagnoses = _map(_msg(MSH, PID, dg1)).diagnoses
    if expected is None:
        assert diagnoses == ()
        return
    (d,) = diagnoses
    assert (d.code, d.text, d.coding_system, d.diagnosis_type, d.priority) == expected


def test_every_dg1_and_in1() -> None:
    in1_a = _seg("IN1", {1: "1", 2: "PLAN1^Gold", 3: "INS1", 4: "Acme Health", 36: "POL-36"})
    in1_b = _seg("IN1", {1: "2", 2: "PLAN2", 3: "INS2", 4: "Other", 36: "POL-36",
                         49: "MEM-49^^^X"})
    event = _map(_msg(MSH, PID, "DG1|1||A01", "DG1|2||B02", in1_a, in1_b, "IN1|3"))
    assert [d.code for d in event.diagnoses] == ["A01", "B02"]
    assert [(i.plan_id, i.company_name, i.member_id) for i in event.insurance] == [
        ("PLAN1", "Acme Health", "POL-36"), ("PLAN2", "Other", "MEM-49")]


@pytest.mark.parametrize(
    ("pid13", "phones"),
    [
        ("555-0001~555-0002", ("555-0001", "555-0002")),
        ("^PRN^PH^^^^^^^^^5550003~(555)0004", ("5550003", "(555)0004")),  # XTN-12 fallback
        ("^PRN^PH", ()),
        ("", ()),
    ],
)
def test_phones(pid13: str, phones: tuple[str, ...]) -> None:
    pid = f"PID|1||MRN1||DOE^JANE|||F|||1 MAIN ST^APT 2^TOWN^ST^12345^USA||{pid13}"
    patient = _map(_msg(MSH, pid)).patient
    assert patient.phones == phones
    assert patient.address is not None and patient.address.street == "1 MAIN ST"


def test_many_phone_repetitions_in_corpus() -> None:
    phones = _corpus("rethink__edge-field-repetitions__1.hl7").patient.phones
    assert phones == tuple(f"555-{n:04d}" for n in range(1, 13))


@pytest.mark.parametrize(("pid30", "expected"), [("Y", True), ("N", False), ("y", True),
                                                 ("", None), ("U", None)])
def test_death_indicator(pid30: str, expected: bool | None) -> None:
    pid = _seg("PID", {1: "1", 3: "MRN1", 5: "DOE^JANE", 30: pid30})
    assert _map(_msg(MSH, pid)).patient.death_indicator is expected


def test_pd1_and_rol() -> None:
    event = _map(_msg(MSH, PID, "PD1|||CLINIC|PCP1^WELBY^MARCUS~PCP2^OTHER^DOC",
                      "ROL|1|AD|PP^Primary Care Provider^HL70443|R1^SMITH^JOHN",
                      "ROL|2|AD|AT|R2^JONES^AMY~R3^X^Y"))
    assert event.primary_care_provider == Provider(id="PCP1", family="WELBY", given="MARCUS")
    assert [(r.role_code, r.person) for r in event.roles] == [
        ("PP", Provider(id="R1", family="SMITH", given="JOHN")),
        ("AT", Provider(id="R2", family="JONES", given="AMY")),
    ]


def test_no_pid_but_mrg() -> None:
    event = _corpus("hapi__NewPipeParserTest__4.hl7")  # A06 with PV2/MRG, no PID
    assert event.patient.identifiers == () and event.patient.name is None
    assert event.patient_key == "2804019@"
    assert event.diagnoses[0].text == "Transient Ischemic Attack / Stroke"


def test_event_is_frozen_and_json_round_trips() -> None:
    event = _map(_ts_message(msh7="20241103013000", pv1_44="20240310023000"))
    again = AdtEvent.model_validate_json(event.model_dump_json())
    assert again == event
    assert again.visit is not None and again.visit.admitted_at == datetime(
        2024, 3, 10, 7, 30, tzinfo=UTC)
    with pytest.raises(ValueError):
        event.__setattr__("event_id", "other")


# --- the normaliser's JSON (map_event + event_json) is the model's JSON -----------------------


def _mutants(texts: list[str], n: int, seed: int) -> list[str]:
    """``n`` copies of the texts with 1-4 characters replaced, deleted or inserted (delimiters,
    escapes, digits, segment breaks): odd dates, offsets, empty and extra components."""
    import random

    rng = random.Random(seed)
    chars = "|^~\\&\r\"XY0 T-+.1"
    out = []
    for _ in range(n):
        t = list(rng.choice(texts))
        for _ in range(rng.randint(1, 4)):
            k, op = rng.randrange(len(t)), rng.random()
            if op < 0.4:
                t[k] = rng.choice(chars)
            elif op < 0.7:
                del t[k]
            else:
                t.insert(k, rng.choice(chars))
        out.append("".join(t))
    return out


def test_event_json_is_the_models_json_for_the_corpus_and_its_mutants() -> None:
    """The normaliser publishes event_json(map_event(...)) without building the model: the
    bytes must be the model's, for every message the mapping accepts."""
    from adt_listener.mapping import event_json, map_event

    _require_corpus()
    texts = [c.values[1] for c in CORPUS_CASES]
    # received_at as the normaliser has it: read by pydantic from the raw envelope.
    received = AdtEvent.model_validate_json(_map(texts[0]).model_dump_json()).received_at
    compared = 0
    for text in texts + _mutants(texts, 3000, seed=7):
        try:
            doc = map_event(Message(text), message_id=9, received_at=received, tz=TZ)
        except Exception:
            continue
        assert event_json(doc) == AdtEvent.model_validate(doc).model_dump_json().encode(), text
        compared += 1
    assert compared > 1000


@pytest.mark.parametrize("zone", ["America/Chicago", "Africa/Monrovia", "UTC", "Asia/Kathmandu"])
@pytest.mark.parametrize("msh7", ["18500101120000", "19700101120000", "20240715120000",
                                  "20240715120000+0545", "20240715120000-0000"])
def test_event_json_writes_every_offset_as_the_model_does(zone: str, msh7: str) -> None:
    """Local mean time offsets have seconds (Chicago before 1883: -5:50:36; Monrovia until
    1972: -0:44:30): the model truncates them to the minute, orjson would round them."""
    from adt_listener.mapping import event_json, map_event

    text = _ts_message(msh7=msh7)
    doc = map_event(Message(text), message_id=1, received_at=RECEIVED, tz=ZoneInfo(zone))
    assert event_json(doc) == AdtEvent.model_validate(doc).model_dump_json().encode()


def test_event_json_checks_the_offset_of_every_time_field() -> None:
    """event_json's offset check (_whole_minute_offsets) names the event's times one by one:
    a time field added to the schema must be added there too."""
    import typing

    from pydantic import BaseModel

    def times(model: type[BaseModel], path: str) -> list[str]:
        found = []
        for name, info in model.model_fields.items():
            for arg in [info.annotation, *typing.get_args(info.annotation)]:
                inner = typing.get_args(arg) if typing.get_origin(arg) is tuple else (arg,)
                for t in inner:
                    if t is datetime or "AwareDatetime" in repr(t):
                        found.append(f"{path}{name}")
                    elif isinstance(t, type) and issubclass(t, BaseModel):
                        found += times(t, f"{path}{name}.")
        return sorted(set(found))

    assert times(AdtEvent, "") == [
        "event.occurred_at", "event.recorded_at", "header.message_time", "patient.death_time",
        "received_at", "visit.admitted_at", "visit.discharged_at"]
