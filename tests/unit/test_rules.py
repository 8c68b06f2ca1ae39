"""The default rule table (DOMAIN.md sections 3 and 4), trigger facts, due times, the ladder,
offset parsing, and the loader's errors (each names the source, the rule and the field)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from followup.calendar import ProgramCalendar
from followup.offsets import Offset, parse_offset
from followup.rules import RuleError, RuleSet, facts, visit_scheduled_facts
from followup.rules_loader import default_rules, load_rule_file, load_rules, program_rules
from schemas.episode_event import EpisodeEvent, EpisodeSnapshot

NY = ZoneInfo("America/New_York")
CAL = ProgramCalendar("America/New_York")
RULES = default_rules()
COMMUNITY = ("post_discharge_contact", "obtain_discharge_information", "schedule_follow_up_visit",
             "medication_reconciliation", "community_supports")


def ny(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=NY)


def snapshot(**changes: Any) -> dict[str, Any]:
    base = {"id": "ep-1", "member_id": "M1", "patient_identifier": "MRN1@HOSP", "kind": "inpatient",
            "status": "open", "facility": "HOSP", "facility_key": "HOSP", "tier": "medium"}
    return base | changes


def event(type_: str, at: str, detail: dict[str, Any] | None = None, **episode: Any) -> EpisodeEvent:
    """An EpisodeEvent as transitions.episodes.v1 carries it."""
    return EpisodeEvent.model_validate({
        "event_id": "adt-1#0", "type": type_, "member_id": "M1", "episode_id": "ep-1",
        "occurred_at": ny(at).isoformat(), "source_event_id": "adt-1", "summary": type_,
        "episode": snapshot(**episode), "detail": detail or {}})


def discharged(at: str, disposition: str | None = "01", **episode: Any) -> EpisodeEvent:
    kind = episode.setdefault("kind", "inpatient")
    episode.setdefault("status", "discharged")
    return event("PatientDischarged", at, {"disposition": disposition, "kind": kind,
                                           "corrected": False}, disposition=disposition, **episode)


def fired(ev: EpisodeEvent) -> dict[str, str]:
    """Rule id -> due time (ISO, program zone) for every rule the event fires."""
    out = {}
    for fact in facts(ev):
        for rule in RULES.matching([fact]):
            anchor = RuleSet.anchor_of(rule, fact)
            assert anchor is not None
            out[rule.id] = RULES.due_at(rule, anchor, CAL).isoformat()
    return out


FRI = "2026-09-04T15:30"  # the Friday afternoon before Labor Day (Monday 2026-09-07)
SCENARIOS: list[tuple[str, EpisodeEvent, dict[str, str]]] = [
    ("friday discharge home before Labor Day", discharged(FRI), {
        "post_discharge_contact": "2026-09-09T15:30:00-04:00",  # Tue, Wed (2 B)
        "obtain_discharge_information": "2026-09-06T15:30:00-04:00",  # 2 C: Sunday
        "schedule_follow_up_visit": "2026-09-09T15:30:00-04:00",
        "face_to_face_visit": "2026-09-18T15:30:00-04:00",  # 14 C
        "medication_reconciliation": "2026-10-04T15:30:00-04:00",  # 30 C
        "community_supports": "2026-09-11T15:30:00-04:00"}),
    ("discharge home from inpatient, high tier, across DST", discharged(
        "2026-03-03T10:00", tier="high"), {
        "post_discharge_contact": "2026-03-05T10:00:00-05:00",
        "obtain_discharge_information": "2026-03-05T10:00:00-05:00",
        "schedule_follow_up_visit": "2026-03-05T10:00:00-05:00",
        "face_to_face_visit_high": "2026-03-10T11:00:00-04:00",  # 7 x 24 h, clocks went forward
        "medication_reconciliation": "2026-04-02T11:00:00-04:00",
        "community_supports": "2026-03-10T11:00:00-04:00"}),
    ("discharge home health from post-acute, low tier", discharged(
        "2026-06-18T09:00", "06", kind="post_acute", tier="low"), {
        "post_discharge_contact": "2026-06-23T09:00:00-04:00",  # Juneteenth Friday skipped
        "obtain_discharge_information": "2026-06-20T09:00:00-04:00",
        "schedule_follow_up_visit": "2026-06-23T09:00:00-04:00",
        "face_to_face_visit": "2026-07-02T09:00:00-04:00",
        "medication_reconciliation": "2026-07-18T09:00:00-04:00",
        "community_supports": "2026-06-25T09:00:00-04:00"}),
    ("ED discharge home", discharged("2026-06-18T22:00", kind="ed"), {
        "post_ed_contact": "2026-06-23T22:00:00-04:00"}),
    ("F32.9 principal at discharge from a stay", discharged(
        "2026-03-02T12:00", diagnoses=["F32.9", "I10"]), {
        **{rule: "" for rule in COMMUNITY}, "face_to_face_visit": "",
        "fuh_follow_up": "2026-03-09T13:00:00-04:00"}),
    ("self-harm poisoning principal (T39.012A)", discharged(
        "2026-03-02T12:00", diagnoses=["T39.012A"], kind="observation"), {
        **{rule: "" for rule in COMMUNITY}, "face_to_face_visit": "",
        "fuh_follow_up": "2026-03-09T13:00:00-04:00"}),
    ("self-harm code only as a secondary diagnosis", discharged(
        "2026-03-02T12:00", diagnoses=["S61.411A", "X78.0XXA"]), {
        **{rule: "" for rule in COMMUNITY}, "face_to_face_visit": ""}),
    ("F10.20 at the ED (FUA)", discharged(
        "2026-05-01T02:00", kind="ed", diagnoses=["R07.9", "F10.20"]), {
        "post_ed_contact": "2026-05-05T02:00:00-04:00",
        "ed_behavioral_follow_up": "2026-05-08T02:00:00-04:00"}),
    ("nicotine dependence at the ED is no FUA", discharged(
        "2026-05-01T02:00", kind="ed", diagnoses=["J20.9", "F17.210"]), {
        "post_ed_contact": "2026-05-05T02:00:00-04:00"}),
    ("left AMA from a stay (07)", discharged("2026-03-06T16:00", "07"), {
        "ama_urgent_contact": "2026-03-09T16:00:00-04:00"}),
    ("left AMA from the ED (07)", discharged("2026-03-06T16:00", "07", kind="ed"), {
        "ama_urgent_contact": "2026-03-09T16:00:00-04:00",
        "post_ed_contact": "2026-03-10T16:00:00-04:00"}),
    ("SNF (03): no community-discharge tasks", discharged("2026-03-02T12:00", "03"), {}),
    ("transfer to a psychiatric hospital (65) with F20.9", discharged(
        "2026-03-02T12:00", "65", diagnoses=["F20.9"]), {}),
    ("no PV1-36 counts as home", discharged("2026-03-02T12:00", None), {
        **{rule: "" for rule in COMMUNITY}, "face_to_face_visit": ""}),
    ("PV1-36 sent as 1", discharged("2026-03-02T12:00", "1"), {
        **{rule: "" for rule in COMMUNITY}, "face_to_face_visit": ""}),
    ("corrected discharge (A08 after A03)", event(
        "PatientDischarged", FRI, {"disposition": "01", "corrected": True}, status="discharged"), {}),
    ("ED visit opened", event("EpisodeOpened", "2026-07-02T14:00", {"kind": "ed"}, kind="ed"), {
        "contact_facility": "2026-07-06T14:00:00-04:00"}),
    ("inpatient admission", event("EpisodeOpened", FRI, {"kind": "inpatient"}), {
        "contact_facility": "2026-09-08T15:30:00-04:00",
        "discharge_planning": "2026-09-08T15:30:00-04:00"}),
    ("ED visit becomes an observation stay", event(
        "EpisodeUpdated", FRI, {"kind_from": "ed", "kind_to": "observation"},
        kind="observation"), {"discharge_planning": "2026-09-08T15:30:00-04:00"}),
    ("inpatient reclassified to observation (A07): no new admission", event(
        "EpisodeUpdated", FRI, {"kind_from": "inpatient", "kind_to": "observation"}), {}),
    ("flag frequent_ed", event("FlagRaised", FRI, {"flag": "frequent_ed"}, kind="ed"), {
        "frequent_ed_review": "2026-09-11T15:30:00-04:00"}),
    ("flag stale", event("FlagRaised", FRI, {"flag": "stale"}, kind="ed"), {
        "stale_episode_review": "2026-09-08T15:30:00-04:00"}),
    ("flag readmission_30d: no task", event("FlagRaised", FRI, {"flag": "readmission_30d"}), {}),
    ("transfer to psych: no task", event("PatientTransferred", FRI, {"level_of_care": "psych"}), {}),
    ("A11 cancel: no task", event("EpisodeCancelled", FRI, {"reason": "A11"}), {}),
    ("A13 reopen: no task", event("EpisodeReopened", FRI, {"readmission": False}), {}),
    ("death: no task", event("EpisodeClosed", FRI, {"reason": "expired"}, status="closed"), {}),
]


@pytest.mark.parametrize(("name", "ev", "expected"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_which_rules_fire_and_when(name: str, ev: EpisodeEvent, expected: dict[str, str]) -> None:
    got = fired(ev)
    assert sorted(got) == sorted(expected)
    assert {k: got[k] for k, v in expected.items() if v} == {k: v for k, v in expected.items() if v}


def test_every_default_rule_is_exercised() -> None:
    seen = {rule for _, ev, expected in SCENARIOS for rule in expected} | {"appointment_reminder"}
    assert seen == {rule.id for rule in RULES}


def test_visit_scheduled_sets_the_reminder_a_day_before() -> None:
    fact = visit_scheduled_facts(EpisodeSnapshot.model_validate(snapshot(status="discharged")),
                                 ny("2026-03-10T09:30"), scheduled_at=ny("2026-03-04T11:00"))
    [rule] = RULES.matching([fact])
    assert rule.id == "appointment_reminder" and rule.anchor == "visit"
    anchor = RuleSet.anchor_of(rule, fact)
    assert anchor is not None
    due = RULES.due_at(rule, anchor, CAL)
    assert due.isoformat() == "2026-03-09T09:30:00-04:00"  # 24 h before
    steps = RULES.step_times(rule, ny("2026-03-04T11:00"), due, CAL)
    assert [s.isoformat() for s in steps] == ["2026-03-06T21:45:00-05:00", due.isoformat()]


def test_naive_visit_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        visit_scheduled_facts(EpisodeSnapshot.model_validate(snapshot()), datetime(2026, 3, 10))


@pytest.mark.parametrize(
    ("rule_id", "visit", "expected"),
    [
        ("medication_reconciliation", "2026-09-10T10:00", "2026-09-10T10:00:00-04:00"),  # visit
        ("medication_reconciliation", "2026-10-20T10:00", "2026-10-04T15:30:00-04:00"),  # 30 C cap
        ("face_to_face_visit_high", "2026-09-08T09:00", "2026-09-08T09:00:00-04:00"),
        ("face_to_face_visit_high", "2026-09-14T09:00", "2026-09-11T15:30:00-04:00"),  # 7 C cap
        ("fuh_follow_up", "2026-09-08T09:00", "2026-09-11T15:30:00-04:00"),  # not pinned
    ],
)
def test_pinned_due_times_follow_the_visit_up_to_the_cap(rule_id: str, visit: str,
                                                         expected: str) -> None:
    rule = RULES.by_id(rule_id)
    assert RULES.due_at(rule, ny(FRI), CAL, visit_at=ny(visit)).isoformat() == expected


def test_fuh_counts_until_30_days() -> None:
    latest = RULES.latest_at(RULES.by_id("fuh_follow_up"), ny(FRI), CAL)
    assert latest is not None and latest.isoformat() == "2026-10-04T15:30:00-04:00"
    assert RULES.latest_at(RULES.by_id("post_ed_contact"), ny(FRI), CAL) is None


def test_default_ladder_reminds_at_half_then_escalates_twice() -> None:
    rule = RULES.by_id("post_discharge_contact")
    due = RULES.due_at(rule, ny(FRI), CAL)
    steps = RULES.step_times(rule, ny(FRI), due, CAL)
    assert [(s.action, s.level, s.notify) for s in rule.escalation] == [
        ("remind", 0, "assignee"), ("escalate", 1, "supervisor"),
        ("escalate", 2, "program_manager")]
    assert [s.isoformat() for s in steps] == [
        "2026-09-07T03:30:00-04:00",  # half of the 5 days elapsed
        "2026-09-09T15:30:00-04:00",  # due
        "2026-09-10T15:30:00-04:00"]  # due + 1 B


def test_half_never_falls_before_the_clock_start() -> None:
    rule = RULES.by_id("appointment_reminder")
    start, due = ny("2026-03-10T12:00"), ny("2026-03-10T08:00")  # scheduled for the same day
    assert RULES.step_times(rule, start, due, CAL)[0] == start


# Section 4: only a care coordinator; coordinator or allied staff assist with scheduling and
# (DOMAIN 3) the post-ED contact; coordinator, allied or support staff for community supports
# and reminders.
ONLY_COORDINATOR = {"contact_facility", "discharge_planning", "post_discharge_contact",
                    "obtain_discharge_information", "face_to_face_visit_high",
                    "face_to_face_visit", "medication_reconciliation", "fuh_follow_up",
                    "ed_behavioral_follow_up", "ama_urgent_contact", "frequent_ed_review",
                    "stale_episode_review"}


@pytest.mark.parametrize("rule", RULES.rules, ids=[r.id for r in RULES.rules])
def test_roles_follow_section_4(rule: Any) -> None:
    if rule.id in ONLY_COORDINATOR:
        expected: tuple[str, ...] = ("care_coordinator",)
    elif rule.id in ("schedule_follow_up_visit", "post_ed_contact"):
        expected = ("care_coordinator", "allied")
    else:
        expected = ("care_coordinator", "allied", "support")
    assert rule.roles == expected
    assert rule.delegable_to == expected[1:]
    assert rule.allowed_roles(delegation_enabled=False) == ("care_coordinator",)
    assert rule.allowed_roles(delegation_enabled=True) == expected


@pytest.mark.parametrize("rule", RULES.rules, ids=[r.id for r in RULES.rules])
def test_voided_by_cancel_reopen_and_death(rule: Any) -> None:
    assert rule.is_voided_by("EpisodeCancelled")
    discharge_work = rule.trigger.event == "PatientDischarged" or rule.anchor == "visit"
    assert rule.is_voided_by("EpisodeReopened") == discharge_work
    assert rule.is_voided_by("EpisodeClosed") == (rule.outreach or rule.id in (
        "discharge_planning", "stale_episode_review"))


def test_contact_outcomes() -> None:
    assert (RULES.by_id("post_discharge_contact").outcome,
            RULES.by_id("post_discharge_contact").min_attempts) == ("attempts", 2)
    assert RULES.by_id("schedule_follow_up_visit").outcome == "visit"
    assert RULES.by_id("ama_urgent_contact").priority == "high"


def test_facts_carry_what_the_trigger_needs() -> None:
    [fact] = facts(event("PatientTransferred", FRI, {"level_of_care": "psych"}))
    assert (fact.event, fact.level_of_care, fact.at) == ("PatientTransferred", "psych", ny(FRI))
    opened = facts(event("EpisodeOpened", FRI, {"kind": "observation"}, kind="observation"))
    assert [(f.event, f.kind) for f in opened] == [("EpisodeOpened", "observation"),
                                                   ("Admitted", "observation")]
    [closed] = facts(event("EpisodeClosed", FRI, {"reason": "expired"}))
    assert closed.event == "EpisodeClosed"
    assert facts(event("CoordinatorAssigned", FRI, {"reason": "roster"})) == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2B", Offset.business(2)),
        ("0B", Offset.business(0)),
        (" 1b ", Offset.business(1)),
        ("0", Offset.duration(timedelta(0))),
        ("PT0S", Offset.duration(timedelta(0))),
        ("P14D", Offset.duration(timedelta(days=14))),
        ("PT4H", Offset.duration(timedelta(hours=4))),
        ("PT30S", Offset.duration(timedelta(seconds=30))),
        ("PT1.5S", Offset.duration(timedelta(seconds=1.5))),
        ("P1DT2H", Offset.duration(timedelta(days=1, hours=2))),
        ("PT90M", Offset.duration(timedelta(minutes=90))),
        ("P2W", Offset.duration(timedelta(days=14))),
        ("-P1D", Offset.duration(timedelta(days=-1))),
        ("p7d", Offset.duration(timedelta(days=7))),
    ],
)
def test_offsets_parse(text: str, expected: Offset) -> None:
    assert parse_offset(text) == expected
    assert parse_offset(str(expected)) == expected  # str() is canonical and parses back


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("PT90M", "PT1H30M"), ("P2W", "P14D"), ("-P1D", "-P1D"), ("0", "PT0S"), ("P1DT2H", "P1DT2H"),
     ("2b", "2B"), ("PT1.5S", "PT1.5S")],
)
def test_offsets_print_canonically(text: str, canonical: str) -> None:
    assert str(parse_offset(text)) == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2X", r'"2X" is not an offset \(use "2B" or an ISO 8601 duration like "P14D"\)'),
        ("", "is not an offset"),
        ("P", "is not an offset"),
        ("PT", "is not an offset"),
        ("P1DT", "is not an offset"),
        ("2 B", "is not an offset"),
        ("1.5B", "is not an offset"),
        ("14D", "is not an offset"),
        ("P1M", "years and months are not fixed lengths"),
        ("P1Y2D", "years and months are not fixed lengths"),
        ("-2B", "business-day offsets cannot be negative"),
    ],
)
def test_bad_offsets_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_offset(text)


RULE = '''
[[rules]]
id = "r1"
task_type = "contact"
title = "Contact"
due = "2B"
roles = ["care_coordinator", "allied"]
trigger = { event = "PatientDischarged", kinds = ["inpatient"] }
'''


def with_rule(*lines: str, drop: str = "") -> str:
    """RULE with ``drop`` lines removed and ``lines`` added to the rule table."""
    kept = [line for line in RULE.splitlines() if not (drop and line.startswith(drop))]
    return "\n".join(kept + list(lines)) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (with_rule('due = "2X"', drop="due"),
         'rules.toml: rule "r1": due: "2X" is not an offset (use "2B" or an ISO 8601 duration '
         'like "P14D")'),
        (with_rule('dew = "2B"'), 'rules.toml: rule "r1": dew: unknown key (did you mean "due"?)'),
        (with_rule("due = 2", drop="due"), 'rule "r1": due: expected an offset string'),
        (with_rule(drop="due"), 'rule "r1": due: missing (required)'),
        (with_rule(drop="id"), "rules.toml: rule #1: id: missing (required)"),
        (with_rule('id = "r 1"', drop="id"), 'rule "r 1": id: "r 1" must be letters'),
        (with_rule('title = ""', drop="title"), 'rule "r1": title: must not be empty'),
        (with_rule('roles = ["nurse"]', drop="roles"), 'rule "r1": roles: "nurse" is not one of'),
        (with_rule("roles = []", drop="roles"), 'rule "r1": roles: must list at least one'),
        (with_rule('priority = "asap"'), 'rule "r1": priority: "asap" is not one of'),
        (with_rule('delegable_to = ["support"]'), 'rule "r1": delegable_to: "support" is not in roles'),
        (with_rule('roles = ["allied"]', 'delegable_to = ["allied"]', drop="roles"),
         'rule "r1": delegable_to: leaves no role'),
        (with_rule('trigger = { event = "Discharged" }', drop="trigger"),
         'rule "r1": trigger.event: "Discharged" is not one of'),
        (with_rule('trigger = { event = "PatientDischarged", kind = ["ed"] }', drop="trigger"),
         'rule "r1": trigger.kind: unknown key (did you mean "kinds"?)'),
        (with_rule('trigger = { event = "PatientDischarged", kinds = ["icu"] }', drop="trigger"),
         'rule "r1": trigger.kinds: "icu" is not one of'),
        (with_rule('trigger = { event = "PatientDischarged", tiers = ["vip"] }', drop="trigger"),
         'rule "r1": trigger.tiers: "vip" is not one of'),
        (with_rule('trigger = { event = "PatientDischarged", dispositions = ["home"] }',
                   drop="trigger"), 'rule "r1": trigger.dispositions: "home" is not a two-digit'),
        (with_rule('trigger = { event = "PatientDischarged", diagnosis_patterns = ["F("] }',
                   drop="trigger"), 'rule "r1": trigger.diagnosis_patterns: "F(" is not a regular'),
        (with_rule('trigger = { event = "PatientDischarged", flags = ["stale"] }', drop="trigger"),
         'rule "r1": trigger.flags: only applies to event FlagRaised'),
        (with_rule('trigger = { event = "FlagRaised", level_of_care = ["psych"] }', drop="trigger"),
         'rule "r1": trigger.level_of_care: only applies to event PatientTransferred'),
        (with_rule('trigger = "PatientDischarged"', drop="trigger"), 'rule "r1": trigger: expected a table'),
        (with_rule(drop="trigger"), 'rule "r1": trigger: missing (required)'),
        (with_rule('anchor = "visit"'), 'rule "r1": anchor: "visit" needs trigger event VisitScheduled'),
        (with_rule('due = "-P1D"', drop="due"), 'rule "r1": due: "-P1D" is before the event'),
        (with_rule('due = "P7D"', 'due_at_latest = "P2D"', drop="due"),
         'rule "r1": due_at_latest: "P2D" is earlier than due "P7D"'),
        (with_rule('due_at_latest = "soon"'), 'rule "r1": due_at_latest: "soon" is not an offset'),
        (with_rule("min_attempts = 2"), 'rule "r1": min_attempts: only applies to outcome "attempts"'),
        (with_rule('outcome = "attempts"', "min_attempts = 0"),
         'rule "r1": min_attempts: must be at least 1'),
        (with_rule('outreach = "yes"'), 'rule "r1": outreach: expected true or false'),
        (with_rule('voided_by = ["A11"]'), 'rule "r1": voided_by: "A11" is not one of'),
        (with_rule('escalation = [{ after = "soon", action = "remind", level = 0, notify = "assignee" }]'),
         'rule "r1": escalation[1].after: "soon" is not an offset'),
        (with_rule('escalation = [{ after = "0", action = "escalate", level = 0, notify = "supervisor" }]'),
         'rule "r1": escalation[1].level: 0: a reminder is level 0, an escalation level 1 or more'),
        (with_rule('escalation = [{ after = "0", action = "page", level = 1, notify = "supervisor" }]'),
         'rule "r1": escalation[1].action: "page" is not one of'),
        (with_rule('escalation = [{ after = "0", action = "escalate", level = 1, notify = "ceo" }]'),
         'rule "r1": escalation[1].notify: "ceo" is not one of'),
        (with_rule('escalation = [{ after = "0", action = "escalate", level = 1 }]'),
         'rule "r1": escalation[1].notify: missing (required)'),
        (with_rule('escalation = [{ after = "0", action = "escalate", level = 2, notify = "supervisor" },',
                   '  { after = "1B", action = "escalate", level = 1, notify = "supervisor" }]'),
         'rule "r1": escalation: escalation levels must rise along the ladder, got [2, 1]'),
        (RULE + RULE, 'rules.toml: rule "r1": id: duplicate (rule #1 has the same id)'),
        ("rulez = []\n", 'rules.toml: rulez: unknown key (did you mean "rules"?)'),
        ("[[rules]\n", "rules.toml: not valid TOML"),
        ('[defaults]\npriority = "asap"\n', 'rules.toml: defaults: priority: "asap" is not one of'),
        ('[defaults]\nescalation = [{ after = "half", action = "remind", level = 1, notify = "assignee" }]\n',
         "rules.toml: defaults: escalation[1].level"),
        ('remove = ["contact_facility"]\n', 'rules.toml: remove: needs extends = "default"'),
        ('extends = "mine"\n', 'rules.toml: extends: "mine" is not one of "default"'),
        ('extends = "default"\nremove = ["nope"]\n',
         'rules.toml: remove: "nope" is not a rule of the default'),
    ],
)
def test_loader_errors_name_the_rule_and_the_field(text: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        load_rules(text, "rules.toml")
    assert message in str(caught.value)


def test_a_minimal_rule_takes_the_defaults() -> None:
    rule = load_rules(RULE).by_id("r1")
    assert (rule.priority, rule.anchor, rule.outreach, rule.outcome) == ("normal", "event", False, "done")
    assert rule.voided_by == ("EpisodeCancelled", "EpisodeReopened")
    assert [s.level for s in rule.escalation] == [0, 1, 2]
    assert load_rules(with_rule("escalation = []")).by_id("r1").escalation == ()


def test_file_defaults_apply_to_its_rules() -> None:
    text = ('[defaults]\npriority = "high"\nvoided_by = ["EpisodesMerged"]\n'
            'escalation = [{ after = "PT4H", action = "escalate", level = 1, notify = "supervisor" }]\n'
            + RULE)
    rule = load_rules(text).by_id("r1")
    assert rule.priority == "high"
    assert rule.voided_by == ("EpisodeCancelled", "EpisodesMerged", "EpisodeReopened")
    [step] = rule.escalation
    assert step.after == parse_offset("PT4H") and step.notify == "supervisor"


def test_a_program_extends_the_default_table() -> None:
    text = ('extends = "default"\nremove = ["stale_episode_review"]\n'
            '[[rules]]\nid = "community_supports"\ntask_type = "community_supports"\n'
            'title = "Community supports"\ndue = "P3D"\nroles = ["care_coordinator", "support"]\n'
            'trigger = { event = "PatientDischarged", kinds = ["inpatient"] }\n'
            '[[rules]]\nid = "level_of_care_review"\ntask_type = "level_of_care_review"\n'
            'title = "Review the move to psychiatric care"\ndue = "PT4H"\nroles = ["care_coordinator"]\n'
            'trigger = { event = "PatientTransferred", level_of_care = ["psych"] }\n')
    rules = load_rules(text, "program.toml")
    ids = [r.id for r in rules]
    assert "stale_episode_review" not in ids and ids[-1] == "level_of_care_review"
    assert ids.index("community_supports") == [r.id for r in RULES].index("community_supports")
    assert rules.by_id("community_supports").due == parse_offset("P3D")
    [fact] = facts(event("PatientTransferred", FRI, {"level_of_care": "psych"}))
    assert [r.id for r in rules.matching([fact])] == ["level_of_care_review"]


def test_rule_files(tmp_path: Path) -> None:
    path = tmp_path / "program.toml"
    path.write_text(RULE, encoding="utf-8")
    assert [r.id for r in load_rule_file(path)] == ["r1"]
    assert [r.id for r in program_rules(str(path))] == ["r1"]
    assert program_rules("") is default_rules()
    with pytest.raises(RuleError, match="missing.toml: cannot read the rule file"):
        load_rule_file(tmp_path / "missing.toml")
    path.write_text('[[rules]]\nid = "r1"\n', encoding="utf-8")
    with pytest.raises(RuleError, match=f'{path}: rule "r1": task_type: missing'):
        load_rule_file(path)


def test_due_times_are_in_the_program_zone() -> None:
    rule = RULES.by_id("post_ed_contact")
    due = RULES.due_at(rule, datetime(2026, 9, 4, 19, 30, tzinfo=UTC), CAL)
    assert due.tzinfo == NY and due.isoformat() == "2026-09-09T15:30:00-04:00"
