"""What a notification says, rendered as an e-mail or a webhook body. Pure: no I/O.

A :class:`Notice` carries ids, the task type and title (from the rule table), the due time,
the escalation level, the priority and a link into the coordinator inbox. That is all the
e-mail and the webhook ever carry. Deliberately left out, because e-mail and third-party
webhook receivers are outside the program's PHI boundary (DESIGN.md section 5):

- the patient's name, birth date, sex, phone, zip and any identifier (MRN, Medicaid or plan
  member id, PID-3), and the program member id;
- diagnoses, disposition, location, facility names and visit numbers (PV1, DG1);
- staff names and addresses other than the recipient's own address in the ``To`` header.

The recipient follows the link and signs in to see the patient; that view is audited.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Literal
from zoneinfo import ZoneInfo

Kind = Literal["task_assigned", "task_reassigned", "task_reminder", "task_escalated",
               "task_cancelled", "episode_alert"]
KINDS: tuple[Kind, ...] = ("task_assigned", "task_reassigned", "task_reminder", "task_escalated",
                           "task_cancelled", "episode_alert")
_QUALIFIER = {"task_assigned": "assigned to you", "task_reassigned": "reassigned to you",
              "task_reminder": "reminder"}


@dataclass(frozen=True, kw_only=True)
class Notice:
    """The content of one notification.

    ``notification_id`` is the idempotency key (filled in per recipient and channel by
    ``store.create_notifications``); ``event_id`` is the task event reported, used only to
    derive that id and never rendered. ``time_zone`` (IANA name) is the zone due times are
    shown in. ``due_at`` must be aware.

    Raises:
        ValueError: an unknown kind, or a naive ``due_at``.
    """

    notification_id: str = ""
    kind: Kind
    task_id: str
    episode_id: str
    task_type: str
    title: str = ""
    due_at: datetime | None = None
    escalation_level: int = 0
    priority: str = "normal"
    link: str = ""
    time_zone: str = "UTC"
    event_id: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown notification kind {self.kind!r}")
        if self.due_at is not None and self.due_at.tzinfo is None:
            raise ValueError("Notice.due_at must be an aware datetime")

    def with_id(self, notification_id: str) -> Notice:
        return replace(self, notification_id=notification_id)


def task_link(public_url: str, task_id: str) -> str:
    """The task in the coordinator inbox: ``{public_url}/inbox#task-{task_id}``."""
    return f"{public_url.rstrip('/')}/inbox#task-{task_id}"


def to_payload(notice: Notice) -> dict[str, Any]:
    """The notice as JSON-ready values (due time in UTC ISO 8601); ``event_id`` is left out."""
    data = {name: getattr(notice, name) for name in _PAYLOAD_FIELDS}
    data["due_at"] = _iso(notice.due_at)
    return data


# Every field is a plain value: a shallow read (dataclasses.asdict deep-copies each value and
# was half the cost of writing a planning batch's notifications).
_PAYLOAD_FIELDS = tuple(f.name for f in fields(Notice) if f.name != "event_id")


def from_payload(payload: dict[str, Any]) -> Notice:
    """Inverse of :func:`to_payload`. Raises ``ValueError``/``TypeError`` on a bad payload."""
    data = dict(payload)
    due = data.pop("due_at", None)
    return Notice(**data, due_at=datetime.fromisoformat(due) if due else None)


def webhook_body(notice: Notice) -> bytes:
    """Compact JSON (keys sorted, no spaces, UTF-8): the exact bytes that are signed."""
    return json.dumps(to_payload(notice), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def email_message(notice: Notice, to_addr: str, from_addr: str) -> EmailMessage:
    """A plain-text e-mail with ids, task type, due time and link, and nothing else."""
    msg = EmailMessage()
    msg["Subject"] = subject(notice)
    msg["From"] = from_addr
    msg["To"] = to_addr
    msg["Message-ID"] = f"<{notice.notification_id or 'notice'}@transcare>"
    msg["X-Transcare-Notification"] = notice.notification_id
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(email_text(notice))
    return msg


def subject(notice: Notice) -> str:
    """E.g. ``[transcare] Task due 2026-11-25 17:00 EST: post_discharge_contact (escalated,
    level 1)``."""
    if notice.kind == "episode_alert":
        return f"[transcare] Episode alert: {notice.episode_id}"
    if notice.kind == "task_cancelled":
        return f"[transcare] Task cancelled: {notice.task_type}"
    qualifier = _QUALIFIER.get(notice.kind, f"escalated, level {notice.escalation_level}")
    if notice.priority in ("high", "urgent"):
        qualifier += f", {notice.priority}"
    return f"[transcare] Task due {due_text(notice)}: {notice.task_type} ({qualifier})"


def email_text(notice: Notice) -> str:
    """The e-mail body: one ``label: value`` line per field, then the link."""
    lines = [
        f"Notification: {notice.notification_id}",
        f"Event: {notice.kind.replace('_', ' ')}",
        f"Task: {notice.task_id}",
        f"Type: {notice.task_type}" + (f" ({notice.title})" if notice.title else ""),
        f"Episode: {notice.episode_id}",
        f"Due: {due_text(notice)}" + (f" ({_iso(notice.due_at)})" if notice.due_at else ""),
        f"Priority: {notice.priority}",
        f"Escalation level: {notice.escalation_level}",
        "",
        f"Open the task: {notice.link}",
        "",
        "Patient details are not sent by e-mail; sign in to transcare to see them.",
    ]
    return "\n".join(lines) + "\n"


def due_text(notice: Notice) -> str:
    """The due time in the notice's zone, e.g. ``2026-11-25 17:00 EST``."""
    if notice.due_at is None:
        return "(no due time)"
    return notice.due_at.astimezone(ZoneInfo(notice.time_zone)).strftime("%Y-%m-%d %H:%M %Z")


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
