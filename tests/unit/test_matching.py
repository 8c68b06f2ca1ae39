"""Patient matching (DOMAIN 6): identifiers first, then a demographic score; ambiguity to review."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.adt_event import AdtEvent
from transitions.matching import (
    Candidate,
    Demographics,
    MatchPolicy,
    MatchResult,
    decide,
    demographic_score,
    event_demographics,
    event_identifiers,
    match,
    name_similarity,
    normalise_name,
    normalise_phone,
    normalise_sex,
    normalise_zip,
    score,
)
from transitions.model import Member, MemberIdentifier

DAY = dt.date(2026, 3, 10)
DOB = dt.date(1950, 4, 2)
PHONE = "(212) 555-0143"


def event(*, pid3: tuple[dict[str, str], ...] = (), family: str | None = "SMITH",
          given: str | None = "JOHN", dob: dt.date | None = DOB, sex: str | None = "M",
          phones: tuple[str, ...] = (), zip: str | None = None,
          insurance: tuple[dict[str, str], ...] = ()) -> AdtEvent:
    """A minimal canonical event with the PID and IN1 fields matching reads."""
    patient: dict[str, Any] = {"identifiers": list(pid3), "birth_date": dob, "sex": sex,
                               "phones": list(phones)}
    if family or given:
        patient["name"] = {"family": family, "given": given}
    if zip:
        patient["address"] = {"zip": zip}
    return AdtEvent.model_validate({
        "event_id": "GENHOSP|C1", "message_id": 1, "patient_key": "K", "facility_time_zone": "UTC",
        "received_at": dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC),
        "header": {"message_type": "ADT", "sending_facility": "GENHOSP"},
        "patient": patient, "insurance": list(insurance),
    })


def member(member_id: str, family: str = "SMITH", given: str = "JOHN", *, dob: dt.date | None = DOB,
           sex: str = "M", phone: str = "", zip: str = "", ids: tuple[tuple[str, str], ...] = (),
           enrolled_from: dt.date | None = None, enrolled_to: dt.date | None = None) -> Member:
    return Member(member_id, family, given, dob, sex, phone, zip,
                  tuple(MemberIdentifier.of(v, a) for v, a in ids),
                  enrolled_from=enrolled_from, enrolled_to=enrolled_to)


def run(ev: AdtEvent, roster: list[Member], on: dt.date = DAY) -> MatchResult:
    by_identifier = {i: m.member_id for m in roster for i in m.identifiers}
    members = {m.member_id: m for m in roster}
    return match(event_identifiers(ev), event_demographics(ev), by_identifier, members, on)


M1 = member("M1", ids=(("M998877", "MEDICAID"),), phone="212-555-0143", zip="10027")
OTHER = member("M2", "NGUYEN", "LINH", dob=dt.date(1961, 7, 30), sex="F",
               ids=(("A55", "NYMEDICAID"),))
PID3_MEDICAID = {"value": " m998877 ", "assigning_authority": " medicaid "}
STRANGER: dict[str, Any] = {"family": "DOE", "given": "JANE", "sex": "F"}

# (event, roster, outcome, member_id, method)
MATCH_CASES: list[Any] = [
    pytest.param(event(pid3=(PID3_MEDICAID,), **STRANGER), [M1, OTHER], "matched", "M1", "identifier",
                 id="identifier-authority-case-and-space"),
    pytest.param(event(pid3=({"value": "M998877", "assigning_authority": "GENHOSP"},), **STRANGER),
                 [M1], "unmatched", None, "none", id="same-value-other-authority-no-hit"),
    pytest.param(event(pid3=({"value": "M998877"},), **STRANGER), [M1], "unmatched", None, "none",
                 id="value-without-authority-no-hit"),
    pytest.param(event(pid3=({"value": "X1", "assigning_authority": "GENHOSP"},
                             {"value": "123-45-6789", "identifier_type": "SS"},
                             {"value": "M998877", "assigning_authority": "MEDICAID"}), **STRANGER),
                 [M1], "matched", "M1", "identifier", id="pid3-third-repetition-hits"),
    pytest.param(event(pid3=({"value": "M998877", "assigning_facility": "Medicaid"},), **STRANGER),
                 [M1], "matched", "M1", "identifier", id="pid3-assigning-facility-as-authority"),
    pytest.param(event(insurance=({"plan_id": "MCD01", "company_id": "NYMEDICAID", "member_id": "a55"},),
                       **STRANGER),
                 [M1, OTHER], "matched", "M2", "identifier", id="in1-member-id-company-authority"),
    pytest.param(event(pid3=(PID3_MEDICAID,), insurance=({"plan_id": "NYMEDICAID", "member_id": "A55"},)),
                 [M1, OTHER], "review", None, "identifier", id="conflicting-identifiers"),
    pytest.param(event(phones=(PHONE,)), [M1, OTHER], "matched", "M1", "demographics",
                 id="demographics-exact"),
    pytest.param(event(family="SMYTH", phones=("+1 212 555 0143",)), [M1], "matched", "M1",
                 "demographics", id="one-letter-typo-with-phone"),
    pytest.param(event(family="Müller-Smith", given="José", zip="10027-1234"),
                 [member("M3", "MULLER SMITH", "JOSE", zip="10027")], "matched", "M3", "demographics",
                 id="accents-and-hyphens"),
    pytest.param(event(family="O'Brien Jr.", given="Sean", phones=(PHONE,)),
                 [member("M4", "OBRIEN", "SEAN", phone=PHONE)], "matched", "M4", "demographics",
                 id="apostrophe-and-suffix"),
    pytest.param(event(family="JOHN", given="SMITH", phones=(PHONE,)), [M1], "matched", "M1",
                 "demographics", id="transposed-names"),
    pytest.param(event(given="J", phones=(PHONE,)), [M1], "matched", "M1", "demographics",
                 id="given-initial-with-phone"),
    pytest.param(event(given="J", zip="10027"), [M1], "review", None, "demographics",
                 id="given-initial-with-zip-only"),
    pytest.param(event(phones=(PHONE,)), [M1, member("T2", given="JAMES", phone=PHONE)], "matched",
                 "M1", "demographics", id="twins-right-twin"),
    pytest.param(event(given="JAMES", phones=(PHONE,)), [M1], "review", None, "demographics",
                 id="twin-only-other-enrolled"),
    pytest.param(event(given="JAMES", zip="10027"), [M1], "review", None, "demographics",
                 id="twin-only-other-enrolled-zip"),
    pytest.param(event(phones=(PHONE,)), [M1, member("M9", phone=PHONE)], "review", None,
                 "demographics", id="two-identical-candidates"),
    pytest.param(event(), [M1], "review", None, "demographics", id="score-85-below-threshold"),
    pytest.param(event(family="JONES", given="MARY", sex="F"), [M1], "unmatched", None, "none",
                 id="below-review-floor"),
    pytest.param(event(dob=None, phones=(PHONE,)), [M1], "unmatched", None, "none", id="no-birth-date"),
    pytest.param(event(dob=dt.date(1950, 4, 3), phones=(PHONE,)), [M1], "unmatched", None, "none",
                 id="other-birth-date-blocks"),
    pytest.param(event(family=None, given=None, dob=None), [M1], "unmatched", None, "none",
                 id="no-demographics"),
    pytest.param(event(pid3=(PID3_MEDICAID,)), [member("M1", ids=(("M998877", "MEDICAID"),),
                                                       enrolled_to=dt.date(2026, 3, 9))],
                 "unmatched", None, "identifier", id="identifier-enrolment-ended"),
    pytest.param(event(pid3=(PID3_MEDICAID,)), [member("M1", ids=(("M998877", "MEDICAID"),),
                                                       enrolled_to=DAY)],
                 "matched", "M1", "identifier", id="identifier-enrolled-last-day"),
    pytest.param(event(phones=(PHONE,)), [member("M1", phone=PHONE, enrolled_from=dt.date(2026, 4, 1))],
                 "unmatched", None, "demographics", id="demographics-enrolment-not-started"),
    pytest.param(event(phones=(PHONE,)), [member("M1", phone=PHONE, enrolled_from=DAY)],
                 "matched", "M1", "demographics", id="demographics-enrolled-first-day"),
]


@pytest.mark.parametrize(("ev", "roster", "outcome", "member_id", "method"), MATCH_CASES)
def test_match(ev: AdtEvent, roster: list[Member], outcome: str, member_id: str | None,
               method: str) -> None:
    result = run(ev, roster)
    assert (result.outcome, result.member_id, result.method) == (outcome, member_id, method)
    assert (result.member_id is not None) == (result.outcome == "matched")
    assert (result.method == "none") == (not result.candidates)
    assert [c.score for c in result.candidates] == sorted((c.score for c in result.candidates),
                                                          reverse=True)


@pytest.mark.parametrize(("ev", "roster", "outcome", "member_id", "method"), MATCH_CASES)
def test_reasons_carry_no_phi(ev: AdtEvent, roster: list[Member], outcome: str, member_id: str | None,
                              method: str) -> None:
    reason = run(ev, roster).reason.upper()
    name = ev.patient.name
    words = [name.family, name.given] if name else []
    words += [i.value.strip() for i in ev.patient.identifiers] + [p.member_id or "" for p in ev.insurance]
    words += [str(ev.patient.birth_date), "1950", "555"]
    assert not [w for w in words if w and w.strip().upper() in reason]


@pytest.mark.parametrize(
    ("ev", "roster", "reason"),
    [
        (event(pid3=(PID3_MEDICAID,), insurance=({"plan_id": "NYMEDICAID", "member_id": "A55"},)),
         [M1, OTHER], "identifiers point to 2 members"),
        (event(phones=(PHONE,)), [M1, member("M9", phone=PHONE)], "2 candidates above threshold"),
        (event(), [M1], "best score 85 below 90"),
        (event(family="JONES", given="MARY", sex="F"), [M1], "best score 55.4 below 75"),
        (event(dob=None), [M1], "no identifier hit and no birth date"),
        (event(family=None, given=None, dob=None), [M1], "no identifier hit and no demographics"),
        (event(dob=dt.date(2001, 1, 1)), [M1], "no candidate with the birth date"),
        (event(pid3=(PID3_MEDICAID,)), [member("M1", ids=(("M998877", "MEDICAID"),),
                                               enrolled_to=dt.date(2026, 1, 1))],
         "not enrolled on the event date"),
    ],
    ids=["conflict", "two-above", "below-threshold", "below-floor", "no-dob", "no-demographics",
         "no-candidate", "not-enrolled"],
)
def test_reasons(ev: AdtEvent, roster: list[Member], reason: str) -> None:
    assert run(ev, roster).reason == reason


def test_a_conflict_lists_every_member_the_identifiers_point_to() -> None:
    ev = event(pid3=(PID3_MEDICAID,), insurance=({"plan_id": "NYMEDICAID", "member_id": "A55"},))
    assert run(ev, [M1, OTHER]).candidates == (Candidate("M1", 100.0), Candidate("M2", 100.0))


def test_an_identifier_hit_outside_the_members_passed_is_not_matched() -> None:
    ids = (MemberIdentifier.of("M998877", "MEDICAID"),)
    result = match(ids, None, {ids[0]: "M1"}, {}, DAY)
    assert (result.outcome, result.reason) == ("unmatched", "member not in the roster")


@pytest.mark.parametrize(
    ("ev", "expected"),
    [
        (event(pid3=(PID3_MEDICAID, {"value": "m998877", "assigning_authority": "MEDICAID"})),
         ("M998877@MEDICAID",)),
        (event(pid3=({"value": "1", "assigning_authority": "A", "assigning_facility": "F"},
                     {"value": "2", "assigning_facility": "F"}, {"value": "3"})), ("1@A", "2@F", "3")),
        (event(insurance=({"plan_id": "P", "company_id": "C", "company_name": "Acme Health",
                           "member_id": "x9"},)), ("X9@P", "X9@C", "X9@ACME HEALTH")),
        (event(insurance=({"plan_id": "P", "company_id": "P", "member_id": "x9"},
                          {"plan_id": "Q"}, {"member_id": "Z"})), ("X9@P",)),
        (event(pid3=({"value": "X9", "assigning_authority": "p"},),
               insurance=({"plan_id": "P", "member_id": "x9"},)), ("X9@P",)),
    ],
    ids=["dedupe-normalised", "authority-then-facility", "in1-each-authority",
         "in1-needs-member-and-authority", "pid3-and-in1-same"],
)
def test_event_identifiers(ev: AdtEvent, expected: tuple[str, ...]) -> None:
    assert tuple(str(i) for i in event_identifiers(ev)) == expected


def test_event_demographics_normalises_pid_fields() -> None:
    ev = event(family="Müller-Smith", given="José", sex="f", phones=("1 (212) 555-0143 x7", "n/a"),
               zip="10027-1234")
    assert event_demographics(ev) == Demographics("MULLER SMITH", "JOSE", DOB, "F", ("2125550143",), "10027")
    assert event_demographics(event(family=None, given=None, dob=None)) is None
    assert event_demographics(event(family=None, given=None)) is not None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Müller-Smith", "MULLER SMITH"), ("MULLER  SMITH", "MULLER SMITH"), ("o'brien", "OBRIEN"),
     ("O’Brien", "OBRIEN"), ("Smith, Jr.", "SMITH"), ("King III", "KING"), ("Jr", "JR"),
     ("Ærøskøbing", "AEROSKOBING"), ("Łukasz", "LUKASZ"), ("Straße", "STRASSE"), ("  ", ""),
     (None, ""), ("de la Cruz", "DE LA CRUZ"), ("Zoë", "ZOE")],
)
def test_normalise_name(raw: str | None, expected: str) -> None:
    assert normalise_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("(212) 555-0143", "2125550143"), ("+1 212 555 0143", "2125550143"), ("12125550143", "2125550143"),
     ("212.555.0143 x12", "2125550143"), ("212-555-0143 ext 9", "2125550143"), ("555-0143", "5550143"),
     ("123", ""), ("", ""), (None, "")],
)
def test_normalise_phone(raw: str | None, expected: str) -> None:
    assert normalise_phone(raw) == expected


@pytest.mark.parametrize(("raw", "expected"),
                         [("10027", "10027"), ("10027-1234", "10027"), ("100271234", "10027"),
                          ("2139", ""), (None, "")])
def test_normalise_zip(raw: str | None, expected: str) -> None:
    assert normalise_zip(raw) == expected


@pytest.mark.parametrize(("raw", "expected"),
                         [("F", "F"), ("m", "M"), ("O", "O"), ("U", "U"), ("A", "U"), ("", "U"), (None, "U")])
def test_normalise_sex(raw: str | None, expected: str) -> None:
    assert normalise_sex(raw) == expected


BASE = Demographics("SMITH", "JOHN", DOB, "M", ("2125550143",), "10027")


@pytest.mark.parametrize(
    ("changes", "low", "high"),
    [
        ({}, 100, 100),
        ({"phones": ()}, 95, 95),  # zip instead of phone
        ({"phones": (), "zip": ""}, 85, 85),
        ({"sex": "U"}, 97.5, 97.5),
        ({"sex": "F"}, 95, 95),
        ({"family": "SMYTH"}, 90, 99),
        ({"given": "J"}, 90, 95),
        ({"given": "JOHN PAUL"}, 97, 99.9),
        ({"family": "JOHN", "given": "SMITH"}, 90, 95),
        ({"given": "JAMES"}, 80, 90),
        ({"birth_date": dt.date(1950, 4, 3)}, 0, 0),
        ({"birth_date": None}, 0, 0),
    ],
    ids=["same", "zip-only", "no-contact", "sex-unknown", "sex-differs", "family-typo", "initial",
         "given-extra-part", "transposed", "other-given", "other-dob", "no-dob"],
)
def test_score_bands(changes: dict[str, Any], low: float, high: float) -> None:
    other = Demographics(**{**BASE.__dict__, **changes})
    assert low <= demographic_score(BASE, other) <= high


def test_score_against_a_roster_member_normalises_the_roster_side() -> None:
    roster = member("M1", "Smith", "John", phone="+1 (212) 555-0143", zip="10027-0001")
    assert score(BASE, roster) == 100.0
    assert score(BASE, member("M1", dob=None)) == 0.0


@pytest.mark.parametrize(
    ("scores", "outcome", "member_id"),
    [
        ((90.0,), "matched", "A"),
        ((89.9,), "review", None),
        ((75.0,), "review", None),
        ((74.9,), "unmatched", None),
        ((96.0, 91.0), "review", None),  # two above threshold, even 5 apart
        ((92.0, 87.0), "matched", "A"),  # second exactly the margin below
        ((92.0, 87.1), "review", None),
        ((100.0, 74.0), "matched", "A"),
        ((80.0, 78.0), "review", None),
        ((), "unmatched", None),
    ],
    ids=["at-threshold", "just-below", "at-floor", "below-floor", "two-above", "margin-exact",
         "within-margin", "second-low", "two-in-band", "none"],
)
def test_decide(scores: tuple[float, ...], outcome: str, member_id: str | None) -> None:
    ranked = tuple(Candidate(chr(ord("A") + n), s) for n, s in enumerate(scores))
    result = decide(ranked)
    assert (result.outcome, result.member_id) == (outcome, member_id)


def test_a_policy_is_validated_and_tunable() -> None:
    with pytest.raises(ValueError):
        MatchPolicy(threshold=70.0)
    with pytest.raises(ValueError):
        MatchPolicy(margin=-1.0)
    assert decide((Candidate("A", 85.0),), MatchPolicy(threshold=85.0)).outcome == "matched"


NAMES = st.text(alphabet=st.characters(codec="latin-1", categories=("L", "P", "Zs", "Nd")), max_size=20)
PEOPLE = st.builds(
    Demographics.of, NAMES, NAMES, st.sampled_from([DOB, None]), st.sampled_from(["F", "M", "U", "X"]),
    st.lists(st.sampled_from([PHONE, "555 0100", "1-718-555-0199"]), max_size=2),
    st.sampled_from(["10027", "11201", ""]),
)


@given(PEOPLE, PEOPLE)
def test_score_is_within_bounds_and_symmetric(a: Demographics, b: Demographics) -> None:
    assert 0.0 <= demographic_score(a, b) <= 100.0
    assert demographic_score(a, b) == demographic_score(b, a)


@given(NAMES, NAMES)
def test_name_normalisation_is_idempotent_and_similarity_symmetric(a: str, b: str) -> None:
    assert normalise_name(normalise_name(a)) == normalise_name(a)
    na, nb = normalise_name(a), normalise_name(b)
    assert name_similarity(na, nb) == name_similarity(nb, na)
    assert 0.0 <= name_similarity(na, nb) <= 1.0


@pytest.mark.parametrize(("a", "b"), [("Müller-Smith", "MULLER SMITH"), ("José", "JOSE"),
                                      ("O'Neil", "oneil"), ("Smith Jr", "SMITH")])
def test_spelling_variants_score_alike_from_either_side(a: str, b: str) -> None:
    assert normalise_name(a) == normalise_name(b)
    event_side = Demographics.of(a, "Ana", DOB, "F")
    roster_side = Demographics.of(b, "ANA", DOB, "F")
    assert demographic_score(event_side, roster_side) == demographic_score(roster_side, event_side) == 85.0
