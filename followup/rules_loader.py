"""Reading and validating a rule table (TOML; format in docs/rules.md).

:func:`load_rules` is pure (text in, :class:`~followup.rules.RuleSet` out);
:func:`load_rule_file` is the one function that reads a file. Every problem raises
:class:`~followup.rules.RuleError` naming the source, the rule (its id, else ``rule #N``) and
the field.
"""

from __future__ import annotations

import functools
import re
import tomllib
from pathlib import Path
from typing import Any, cast

from followup.offsets import Offset
from followup.rules import (
    ACTIONS,
    ANCHORS,
    HALF,
    NOTIFY,
    OUTCOMES,
    PRIORITIES,
    VOIDING_EVENTS,
    Defaults,
    EscalationStep,
    Rule,
    RuleError,
    RuleSet,
)
from followup.rules_fields import Fields
from followup.triggers import (
    FLAGS,
    KINDS,
    LEVELS_OF_CARE,
    NO_DISPOSITION,
    TRIGGER_EVENTS,
    Trigger,
    normalise_disposition,
)
from transitions.model import ROLES, TIERS

DEFAULT_FILE = Path(__file__).with_name("default_rules.toml")
_TOP_KEYS = ("extends", "remove", "defaults", "rules")
_DEFAULT_KEYS = ("priority", "voided_by", "escalation")
_RULE_KEYS = ("id", "task_type", "title", "description", "source", "trigger", "due",
              "due_at_latest", "anchor", "pinned_to_visit", "roles", "delegable_to", "priority",
              "outreach", "outcome", "min_attempts", "voided_by", "escalation")
_TRIGGER_KEYS = ("event", "kinds", "patient_classes", "dispositions", "diagnosis_patterns",
                 "principal_only", "tiers", "flags", "level_of_care")
_STEP_KEYS = ("after", "action", "level", "notify")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def load_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Parse and validate a rule table.

    Raises:
        RuleError: invalid TOML, an unknown key, a bad value (offset, role, event, priority,
            regular expression...), a duplicate id, or delegable_to outside roles.
    """
    return _load(text, source, allow_extends=True)


def load_rule_file(path: str | Path) -> RuleSet:
    """Read and validate a rule file (UTF-8). Raises RuleError, also when it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"{path}: cannot read the rule file: {exc}") from exc
    return _load(text, str(path), allow_extends=Path(path) != DEFAULT_FILE)


@functools.cache
def default_rules() -> RuleSet:
    """The packaged default table (``followup/default_rules.toml``), loaded once."""
    return load_rule_file(DEFAULT_FILE)


def program_rules(rules_file: str = "") -> RuleSet:
    """The table a program runs with: settings ``rules_file`` when set, else the default."""
    return load_rule_file(rules_file) if rules_file else default_rules()


def _load(text: str, source: str, allow_extends: bool) -> RuleSet:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{source}: not valid TOML: {exc}") from exc
    top = Fields(source, doc, _TOP_KEYS)
    base = _base(top, allow_extends)
    defaults = _defaults(source, top.table.get("defaults", {}), base.defaults)
    own = [_rule(source, n, table, defaults) for n, table in enumerate(top.tables("rules", []), 1)]
    _check_unique(source, own)
    return RuleSet(_merge(top, base, own), defaults)


def _base(top: Fields, allow_extends: bool) -> RuleSet:
    """The table this file extends (``extends = "default"``), else an empty one."""
    if not top.has("extends"):
        if top.has("remove"):
            top.fail("remove", 'needs extends = "default"')
        return RuleSet(())
    top.choice("extends", ("default",))
    if not allow_extends:
        top.fail("extends", "the default table cannot extend itself")
    return default_rules()


def _merge(top: Fields, base: RuleSet, own: list[Rule]) -> tuple[Rule, ...]:
    """Base rules minus ``remove``, each replaced in place by an own rule with its id; the
    other own rules after them."""
    removed = top.texts("remove")
    for rule_id in removed:
        if rule_id not in {r.id for r in base}:
            top.fail("remove", f'"{rule_id}" is not a rule of the default table')
    mine = {r.id: r for r in own}
    kept = [mine.pop(r.id, r) for r in base if r.id not in removed]
    return (*kept, *(r for r in own if r.id in mine))


def _check_unique(source: str, rules: list[Rule]) -> None:
    seen: dict[str, int] = {}
    for position, rule in enumerate(rules, 1):
        if rule.id in seen:
            raise RuleError(f'{source}: rule "{rule.id}": id: duplicate (rule #{seen[rule.id]} '
                            "has the same id)")
        seen[rule.id] = position


def _defaults(source: str, table: Any, base: Defaults) -> Defaults:
    fields = Fields(f"{source}: defaults", table, _DEFAULT_KEYS)
    return Defaults(
        priority=cast(Any, fields.choice("priority", PRIORITIES, base.priority)),
        voided_by=cast(Any, fields.choices("voided_by", VOIDING_EVENTS) or base.voided_by),
        escalation=_ladder(fields, base.escalation),
    )


def _rule(source: str, position: int, table: Any, defaults: Defaults) -> Rule:
    rule_id = table.get("id") if isinstance(table, dict) else None
    label = f'rule "{rule_id}"' if isinstance(rule_id, str) and rule_id else f"rule #{position}"
    fields = Fields(f"{source}: {label}", table, _RULE_KEYS)
    names: dict[str, Any] = {"id": _name(fields, "id"), "task_type": _name(fields, "task_type"),
                             "title": fields.text("title"),
                             "description": fields.text("description", ""),
                             "source": fields.text("source", "")}
    trigger = _trigger(fields)
    what = _what(fields, defaults)
    return Rule(
        **names, trigger=trigger, **_when(fields, trigger), **_who(fields), **what,
        voided_by=_voided_by(fields, defaults, trigger, what["outreach"]),
        escalation=_ladder(fields, defaults.escalation),
    )


def _name(fields: Fields, key: str) -> str:
    value = fields.text(key)
    if not _NAME.fullmatch(value):
        fields.fail(key, f'"{value}" must be letters, digits, "_", "." or "-"')
    return value


def _trigger(rule: Fields) -> Trigger:
    if not rule.has("trigger"):
        rule.fail("trigger", "missing (required)")
    f = Fields(rule.where, rule.table["trigger"], _TRIGGER_KEYS, prefix="trigger.")
    event = f.choice("event", TRIGGER_EVENTS)
    for key, only in (("flags", "FlagRaised"), ("level_of_care", "PatientTransferred")):
        if f.has(key) and event != only:
            f.fail(key, f"only applies to event {only}")
    return Trigger(
        event=cast(Any, event), kinds=f.choices("kinds", KINDS),
        patient_classes=tuple(c.upper() for c in f.texts("patient_classes")),
        dispositions=_dispositions(f), diagnosis_patterns=_patterns(f),
        principal_only=f.flag("principal_only", True), tiers=f.choices("tiers", TIERS),
        flags=f.choices("flags", FLAGS), level_of_care=f.choices("level_of_care", LEVELS_OF_CARE),
    )


def _dispositions(f: Fields) -> tuple[str, ...]:
    """PV1-36 codes: two digits (UB-04 patient status), or "none" for a missing PV1-36."""
    codes = tuple(normalise_disposition(c) or "" for c in f.texts("dispositions"))
    for code in codes:
        if code != NO_DISPOSITION and not re.fullmatch(r"\d\d", code):
            f.fail("dispositions", f'"{code}" is not a two-digit PV1-36 code or "none"')
    return codes


def _patterns(f: Fields) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for text in f.texts("diagnosis_patterns"):
        try:
            compiled.append(re.compile(text, re.IGNORECASE))
        except re.error as exc:
            f.fail("diagnosis_patterns", f'"{text}" is not a regular expression: {exc}')
    return tuple(compiled)


def _when(f: Fields, trigger: Trigger) -> dict[str, Any]:
    """due, due_at_latest, anchor, pinned_to_visit, checked against each other."""
    anchor = f.choice("anchor", ANCHORS, "event")
    if anchor == "visit" and trigger.event != "VisitScheduled":
        f.fail("anchor", '"visit" needs trigger event VisitScheduled')
    due = cast(Offset, f.offset("due"))
    if due.is_negative and anchor != "visit":
        f.fail("due", f'"{due}" is before the event; only anchor "visit" allows negative offsets')
    latest = f.offset("due_at_latest", None)
    if latest is not None and not latest.is_business and not due.is_business \
            and latest.elapsed < due.elapsed:
        f.fail("due_at_latest", f'"{latest}" is earlier than due "{due}"')
    return {"due": due, "due_at_latest": latest, "anchor": anchor,
            "pinned_to_visit": f.flag("pinned_to_visit", False)}


def _who(f: Fields) -> dict[str, Any]:
    """roles (DOMAIN.md section 4) and delegable_to, a subset that leaves someone without it."""
    roles = f.choices("roles", ROLES, required=True)
    delegable = f.choices("delegable_to", ROLES)
    for role in delegable:
        if role not in roles:
            f.fail("delegable_to", f'"{role}" is not in roles')
    if set(roles) <= set(delegable):
        f.fail("delegable_to", "leaves no role that may do the task when delegation is off")
    return {"roles": roles, "delegable_to": delegable}


def _what(f: Fields, defaults: Defaults) -> dict[str, Any]:
    """priority, outreach, outcome and min_attempts (only with outcome "attempts")."""
    outcome = f.choice("outcome", OUTCOMES, "done")
    if f.has("min_attempts") and outcome != "attempts":
        f.fail("min_attempts", 'only applies to outcome "attempts"')
    attempts = f.integer("min_attempts", 1 if outcome == "attempts" else 0)
    if attempts < 0 or (outcome == "attempts" and attempts < 1):
        f.fail("min_attempts", f"must be at least 1, got {attempts}")
    return {"priority": f.choice("priority", PRIORITIES, defaults.priority),
            "outreach": f.flag("outreach", False), "outcome": outcome, "min_attempts": attempts}


def _voided_by(f: Fields, defaults: Defaults, trigger: Trigger, outreach: bool) -> tuple[Any, ...]:
    """The rule's own list plus the defaults, EpisodeCancelled (A11, always), EpisodeReopened
    (A13) for a discharge rule and EpisodeClosed (death) for an outreach rule."""
    implied = (["EpisodeReopened"] if trigger.event == "PatientDischarged" else []) + (
        ["EpisodeClosed"] if outreach else [])
    own = f.choices("voided_by", VOIDING_EVENTS)
    return tuple(dict.fromkeys(("EpisodeCancelled", *defaults.voided_by, *own, *implied)))


def _ladder(f: Fields, default: tuple[EscalationStep, ...]) -> tuple[EscalationStep, ...]:
    """The escalation list (empty allowed); the default ladder when the key is absent."""
    if not f.has("escalation"):
        return default
    steps = [_step(f, n, table) for n, table in enumerate(f.tables("escalation"), 1)]
    levels = [s.level for s in steps if s.action == "escalate"]
    if levels != sorted(set(levels)):
        f.fail("escalation", f"escalation levels must rise along the ladder, got {levels}")
    return tuple(steps)


def _step(rule: Fields, n: int, table: Any) -> EscalationStep:
    f = Fields(rule.where, table, _STEP_KEYS, prefix=f"{rule.prefix}escalation[{n}].")
    after: Any = HALF if f.text("after") == HALF else f.offset("after")
    action = f.choice("action", ACTIONS)
    level = f.integer("level")
    if (action == "remind") != (level == 0) or level < 0:
        f.fail("level", f"{level}: a reminder is level 0, an escalation level 1 or more")
    return EscalationStep(after, cast(Any, action), level, cast(Any, f.choice("notify", NOTIFY)))


__all__ = ["DEFAULT_FILE", "default_rules", "load_rule_file", "load_rules", "program_rules"]
