"""The follow-up rule table as data: rules, escalation ladders, and due-time arithmetic.

Pure value objects (DOMAIN.md sections 3 and 4). The default table ships as
``followup/default_rules.toml``; :mod:`followup.rules_loader` reads and validates a table
(``load_rules``, ``load_rule_file``, ``default_rules``). The file format is in docs/rules.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from followup.calendar import ProgramCalendar
from followup.offsets import Offset, parse_offset
from followup.triggers import Facts, Trigger, TriggerEvent, facts, visit_scheduled_facts
from schemas.episode_event import EpisodeEventType
from transitions.model import Role

Priority = Literal["low", "normal", "high", "urgent"]
PRIORITIES: tuple[str, ...] = get_args(Priority)
Anchor = Literal["event", "visit"]
ANCHORS: tuple[str, ...] = get_args(Anchor)
Action = Literal["remind", "escalate"]
ACTIONS: tuple[str, ...] = get_args(Action)
Notify = Literal["assignee", "supervisor", "program_manager"]
NOTIFY: tuple[str, ...] = get_args(Notify)
Outcome = Literal["done", "attempts", "visit"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
VOIDING_EVENTS: tuple[str, ...] = get_args(EpisodeEventType)
HALF: Literal["half"] = "half"


class RuleError(ValueError):
    """A rule table is invalid; the message names the source, the rule and the field."""


@dataclass(frozen=True)
class EscalationStep:
    """One ladder step: at ``after`` ("half" = halfway from clock start to due; or an offset
    from the due time), ``action`` (remind, level 0; escalate, level >= 1) notifying ``notify``."""

    after: Offset | Literal["half"]
    action: Action
    level: int
    notify: Notify


DEFAULT_LADDER: tuple[EscalationStep, ...] = (
    EscalationStep(HALF, "remind", 0, "assignee"),
    EscalationStep(parse_offset("0"), "escalate", 1, "supervisor"),
    EscalationStep(parse_offset("1B"), "escalate", 2, "program_manager"),
)


@dataclass(frozen=True)
class Rule:
    """One row of the rule table: which task a trigger creates, when it is due, who may do it.

    ``voided_by`` is resolved by the loader: it always holds EpisodeCancelled (A11), also
    EpisodeReopened (A13) for a discharge rule and EpisodeClosed for an outreach rule.
    ``due_at_latest`` caps the due time however it moves (pinned to a visit, reassigned) and
    is the last time the work still counts (FUH 30-day). ``pinned_to_visit``: the planner
    sets the due time to the scheduled visit (never past ``due_at_latest``).
    """

    id: str
    task_type: str
    title: str
    trigger: Trigger
    due: Offset
    roles: tuple[Role, ...]
    due_at_latest: Offset | None = None
    anchor: Anchor = "event"
    delegable_to: tuple[Role, ...] = ()
    priority: Priority = "normal"
    outreach: bool = False
    pinned_to_visit: bool = False
    outcome: Outcome = "done"
    min_attempts: int = 0  # outcome "attempts": attempts logged before it may close unreached
    voided_by: tuple[EpisodeEventType, ...] = ("EpisodeCancelled",)
    escalation: tuple[EscalationStep, ...] = DEFAULT_LADDER
    source: str = ""  # DOMAIN row and CMS / NCQA reference
    description: str = ""

    def allowed_roles(self, delegation_enabled: bool) -> tuple[Role, ...]:
        """Who may hold the task: every role, or without delegation those not in delegable_to."""
        if delegation_enabled:
            return self.roles
        return tuple(r for r in self.roles if r not in self.delegable_to)

    def is_voided_by(self, event_type: str) -> bool:
        return event_type in self.voided_by


@dataclass(frozen=True)
class Defaults:
    """Values a rule takes when its file does not say (the ``[defaults]`` table)."""

    priority: Priority = "normal"
    voided_by: tuple[EpisodeEventType, ...] = ("EpisodeCancelled",)
    escalation: tuple[EscalationStep, ...] = DEFAULT_LADDER


@dataclass(frozen=True)
class RuleSet:
    """A validated rule table, rules in file order (ids unique)."""

    rules: tuple[Rule, ...]
    defaults: Defaults = Defaults()

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def by_id(self, rule_id: str) -> Rule:
        """The rule with this id. Raises KeyError when there is none."""
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def matching(self, event_facts: Iterable[Facts]) -> list[Rule]:
        """Rules any of the facts triggers, in table order, each once."""
        wanted = tuple(event_facts)
        return [r for r in self.rules if any(r.trigger.matches(f) for f in wanted)]

    @staticmethod
    def anchor_of(rule: Rule, fact: Facts) -> datetime | None:
        """The time ``rule.due`` counts from for ``fact``: its visit for anchor "visit", else
        its clinical time; None when the fact lacks it."""
        return fact.visit_at if rule.anchor == "visit" else fact.at

    def due_at(self, rule: Rule, anchor: datetime, calendar: ProgramCalendar,
               visit_at: datetime | None = None) -> datetime:
        """Due time: ``anchor`` (the fact's clinical time, or the visit for anchor "visit")
        plus ``rule.due``; for a ``pinned_to_visit`` rule with a scheduled ``visit_at``, the
        visit. Never later than :meth:`latest_at`. Raises ValueError for naive datetimes."""
        due = calendar.add(anchor, rule.due)
        if rule.pinned_to_visit and visit_at is not None:
            due = calendar.local(visit_at)
        latest = self.latest_at(rule, anchor, calendar)
        if latest is None:
            return due
        return min(due, latest, key=lambda t: t.astimezone(UTC))  # by instant, not wall clock

    def latest_at(self, rule: Rule, anchor: datetime, calendar: ProgramCalendar) -> datetime | None:
        """``anchor`` plus ``rule.due_at_latest``, or None when the rule has no cap."""
        if rule.due_at_latest is None:
            return None
        return calendar.add(anchor, rule.due_at_latest)

    def step_times(self, rule: Rule, clock_start: datetime, due_at: datetime,
                   calendar: ProgramCalendar) -> list[datetime]:
        """When each ladder step fires, in ladder order: "half" is the elapsed midpoint of
        clock start and due (never before the clock start); an offset counts from ``due_at``."""
        return [self._step_time(step, clock_start, due_at, calendar) for step in rule.escalation]

    @staticmethod
    def _step_time(step: EscalationStep, clock_start: datetime, due_at: datetime,
                   calendar: ProgramCalendar) -> datetime:
        if isinstance(step.after, Offset):
            return calendar.add(due_at, step.after)
        # "half": exact elapsed time (UTC: aware datetimes sharing a zone subtract wall-clock)
        window = calendar.local(due_at).astimezone(UTC) - calendar.local(clock_start).astimezone(UTC)
        return calendar.add_elapsed(clock_start, max(window / 2, timedelta(0)))


__all__ = [
    "ACTIONS", "ANCHORS", "DEFAULT_LADDER", "HALF", "NOTIFY", "OUTCOMES", "PRIORITIES",
    "VOIDING_EVENTS", "Action", "Anchor", "Defaults", "EscalationStep", "Facts", "Notify",
    "Offset", "Outcome", "Priority", "Rule", "RuleError", "RuleSet", "Trigger", "TriggerEvent",
    "facts", "parse_offset", "visit_scheduled_facts",
]
