"""The relational schema (SQLAlchemy Core). Alembic migrations in ``migrations/`` create it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    and_,
    literal_column,
)
from sqlalchemy.engine import Dialect

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)


NAIVE = "naive datetime given to the database: use an aware datetime"


def sqlite_text(value: datetime) -> str:
    """A :class:`UtcDateTime` value as SQLite stores it: naive UTC text with microseconds,
    ``YYYY-MM-DD HH:MM:SS.ffffff``, the text SQLAlchemy's DATETIME writes, for the listener's
    statements that bypass SQLAlchemy (the same text, so rows read, compare and sort alike)."""
    if value.tzinfo is None:
        raise ValueError(NAIVE)
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes stored as UTC and always read back aware (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(NAIVE)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

# Primary keys: BIGINT on PostgreSQL, INTEGER (rowid alias) on SQLite.
_ID = BigInteger().with_variant(Integer(), "sqlite")

messages = Table(
    "messages",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("sending_facility", String(180), nullable=False, default=""),
    # MSH-10; NULL when the message had none (NULLs never collide in the unique index).
    Column("control_id", String(199), nullable=True),
    Column("message_type", String(40), nullable=False, default=""),
    Column("patient_key", String(250), nullable=False, default=""),
    Column("peer", String(80), nullable=False, default=""),
    Column("charset", String(20), nullable=False, default="ascii"),
    Column("raw", LargeBinary, nullable=False),
    Column("ack_code", String(2), nullable=False),
    # The ACK frames sent, ACK-separator joined (an enhanced-mode exchange has two).
    Column("ack", Text, nullable=False),
    # accepted | processed | deadlettered | rejected
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("published_at", UtcDateTime(), nullable=True),
    Column("processed_at", UtcDateTime(), nullable=True),
)

# Duplicate detection: one accepted message per sending facility and MSH-10. Rejected messages
# are kept but do not count, so a sender can fix a message and resend it with the same id.
Index(
    "uq_messages_facility_control_id", messages.c.sending_facility, messages.c.control_id,
    unique=True, sqlite_where=messages.c.status != "rejected",
    postgresql_where=messages.c.status != "rejected",
)

# The relay's queue: accepted messages not yet published (published_at and status lead the
# columns, so SQLite's planner prefers it to ix_messages_status). A row leaves this partial
# index when it is published or processed, so the index holds only the backlog however many
# messages the store keeps, and neither update writes an entry to it. Queries for the backlog
# use UNPUBLISHED itself (a literal, not a bound parameter), so both databases see that the
# index applies.
UNPUBLISHED = and_(messages.c.published_at.is_(None), messages.c.status == literal_column("'accepted'"))
Index("ix_messages_unpublished", messages.c.published_at, messages.c.status, messages.c.id,
      sqlite_where=UNPUBLISHED,
      postgresql_where=UNPUBLISHED)
Index("ix_messages_status", messages.c.status)
Index("ix_messages_received_at", messages.c.received_at)


# --- Roster and staff directory (issue 3) ------------------------------------------------------

members = Table(
    "members",
    metadata,
    Column("member_id", String(64), primary_key=True),
    Column("family_name", String(120), nullable=False, default=""),
    Column("given_name", String(120), nullable=False, default=""),
    Column("birth_date", Date, nullable=True),
    Column("sex", String(1), nullable=False, default="U"),
    Column("phone", String(40), nullable=False, default=""),
    Column("zip", String(10), nullable=False, default=""),
    Column("tier", String(8), nullable=False, default="low"),  # from the roster
    Column("raised_tier", String(8), nullable=True),  # raised by a readmission or frequent ED use
    Column("coordinator_id", String(64), nullable=False, default=""),
    Column("program", String(80), nullable=False, default=""),
    Column("opted_out", Boolean, nullable=False, default=False),
    Column("enrolled_from", Date, nullable=True),
    Column("enrolled_to", Date, nullable=True),
    Column("updated_at", UtcDateTime(), nullable=False),
)
Index("ix_members_birth_date", members.c.birth_date)

# Every identifier known for a member: PID-3 value with its assigning authority, a Medicaid or
# plan member id (IN1), or one learned from a merge (A40 MRG-1). One identifier, one member.
member_identifiers = Table(
    "member_identifiers",
    metadata,
    Column("value", String(64), nullable=False),
    Column("authority", String(64), nullable=False, default=""),
    Column("member_id", String(64), nullable=False),
    Column("source", String(16), nullable=False, default="roster"),  # roster | merge | review
    PrimaryKeyConstraint("value", "authority", name="pk_member_identifiers"),
)
Index("ix_member_identifiers_member_id", member_identifiers.c.member_id)

staff = Table(
    "staff",
    metadata,
    Column("staff_id", String(64), primary_key=True),
    Column("name", String(160), nullable=False, default=""),
    Column("role", String(20), nullable=False),
    Column("team", String(80), nullable=False, default=""),
    Column("supervisor_id", String(64), nullable=False, default=""),
    Column("backup_id", String(64), nullable=False, default=""),
    Column("active", Boolean, nullable=False, default=True),
    Column("email", String(254), nullable=False, default=""),
    Column("webhook_url", String(500), nullable=False, default=""),
    Column("away_from", Date, nullable=True),
    Column("away_to", Date, nullable=True),
    Column("capacity", Integer, nullable=False, default=0),  # 0 = no stated limit
    Column("updated_at", UtcDateTime(), nullable=False),
)

# --- Episodes (issue 3) ------------------------------------------------------------------------

episodes = Table(
    "episodes",
    metadata,
    Column("id", String(40), primary_key=True),  # deterministic: see transitions.ids
    Column("member_id", String(64), nullable=False),
    Column("patient_identifier", String(140), nullable=False, default=""),  # value@authority
    Column("facility_key", String(180), nullable=False),  # MSH-4: the visit-number namespace
    Column("facility", String(180), nullable=False),  # PV1-3.4, else MSH-4
    Column("kind", String(12), nullable=False),  # ed | inpatient | observation | post_acute
    Column("status", String(12), nullable=False),  # open | discharged | closed | cancelled
    Column("patient_class", String(4), nullable=False, default=""),
    Column("location", String(200), nullable=False, default=""),
    Column("admitted_at", UtcDateTime(), nullable=True),
    Column("discharged_at", UtcDateTime(), nullable=True),
    Column("disposition", String(4), nullable=False, default=""),
    Column("coordinator_id", String(64), nullable=False, default=""),
    Column("coordinator_reason", String(40), nullable=False, default=""),
    Column("tier", String(8), nullable=False, default="low"),
    Column("paused", Boolean, nullable=False, default=False),
    Column("opted_out", Boolean, nullable=False, default=False),
    Column("detail", JSON, nullable=False),  # the rest of the state (see transitions.model)
    Column("last_event_at", UtcDateTime(), nullable=True),
    Column("updated_at", UtcDateTime(), nullable=False),
)
Index("ix_episodes_member_id", episodes.c.member_id)
Index("ix_episodes_status", episodes.c.status)
Index("ix_episodes_facility", episodes.c.facility)

# The visit key (MSH-4 facility, PV1-19 visit number) -> episode: one episode per visit, by
# construction. An ED visit that becomes an admission owns both visit numbers.
episode_visits = Table(
    "episode_visits",
    metadata,
    Column("facility_key", String(180), nullable=False),
    Column("visit_number", String(80), nullable=False),
    Column("episode_id", String(40), nullable=False),
    PrimaryKeyConstraint("facility_key", "visit_number", name="pk_episode_visits"),
)
Index("ix_episode_visits_episode_id", episode_visits.c.episode_id)

episode_flags = Table(
    "episode_flags",
    metadata,
    Column("episode_id", String(40), nullable=False),
    Column("flag", String(24), nullable=False),
    Column("raised_at", UtcDateTime(), nullable=False),
    Column("detail", JSON, nullable=False),
    PrimaryKeyConstraint("episode_id", "flag", name="pk_episode_flags"),
)
Index("ix_episode_flags_flag", episode_flags.c.flag)

episode_timeline = Table(
    "episode_timeline",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("episode_id", String(40), nullable=False),
    Column("occurred_at", UtcDateTime(), nullable=True),  # the clinical time
    Column("type", String(40), nullable=False),
    Column("source_id", String(400), nullable=False, default=""),  # ADT event id, task id
    Column("summary", Text, nullable=False, default=""),
    Column("detail", JSON, nullable=False),
)
Index("ix_episode_timeline_episode_id", episode_timeline.c.episode_id, episode_timeline.c.id)

# One row per ADT event the transitions processor has handled, committed with the state it
# produced: a replay finds the row and changes nothing.
processed_events = Table(
    "processed_events",
    metadata,
    Column("event_id", String(400), primary_key=True),
    Column("message_id", BigInteger, nullable=False),
    Column("facility", String(180), nullable=False, default=""),
    Column("outcome", String(16), nullable=False),  # applied | unmatched | review | ignored
    Column("member_id", String(64), nullable=True),
    Column("processed_at", UtcDateTime(), nullable=False),
)

match_reviews = Table(
    "match_reviews",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("event_id", String(400), nullable=False, unique=True),
    Column("message_id", BigInteger, nullable=False),
    Column("facility", String(180), nullable=False, default=""),
    Column("reason", String(200), nullable=False),
    Column("candidates", JSON, nullable=False),  # [{"member_id", "score"}]
    Column("status", String(12), nullable=False, default="pending"),  # pending | resolved
    Column("created_at", UtcDateTime(), nullable=False),
    Column("event", Text, nullable=True),  # the AdtEvent's JSON (migration 0007; NULL before)
    # The decision: the member the event is applied to (NULL: not one of the program's
    # patients), who decided and when.
    Column("decided_member_id", String(64), nullable=True),
    Column("resolved_by", String(64), nullable=True),
    Column("resolved_at", UtcDateTime(), nullable=True),
)
Index("ix_match_reviews_status", match_reviews.c.status)

# The PID-3 identifiers (normalised, as matching compares them) of each pending review's event:
# a decision finds the patient's other waiting events through the identifiers the member
# holds, without reading every review in the queue (migration 0008). Dropped when the review
# is decided.
match_review_identifiers = Table(
    "match_review_identifiers",
    metadata,
    Column("value", Text, nullable=False),
    Column("authority", Text, nullable=False),
    Column("review_id", BigInteger, nullable=False),
    PrimaryKeyConstraint("value", "authority", "review_id", name="pk_match_review_identifiers"),
)
Index("ix_match_review_identifiers_review_id", match_review_identifiers.c.review_id)

# --- Transactional outbox and leases -----------------------------------------------------------

# Events written in the same transaction as the state they describe; the outbox publisher
# sends them in id order and marks them published.
outbox = Table(
    "outbox",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("topic", String(80), nullable=False),
    Column("key", String(250), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("published_at", UtcDateTime(), nullable=True),
)
Index("ix_outbox_unpublished", outbox.c.published_at, outbox.c.id)

# Named leases: one holder at a time for work that must run once (the outbox publisher,
# the stale-episode sweep, the follow-up scheduler).
leases = Table(
    "leases",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("holder", String(80), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
)

# --- Follow-up tasks and notifications (issue 4) ------------------------------------------------

tasks = Table(
    "tasks",
    metadata,
    Column("id", String(40), primary_key=True),  # deterministic: see followup.tasks
    Column("episode_id", String(40), nullable=False),
    Column("member_id", String(64), nullable=False),
    Column("rule_id", String(80), nullable=False),
    Column("type", String(60), nullable=False),
    Column("title", String(200), nullable=False, default=""),
    Column("status", String(12), nullable=False),  # open | claimed | done | cancelled
    Column("assignee_id", String(64), nullable=False, default=""),
    Column("assignee_role", String(20), nullable=False, default=""),
    Column("assignment_reason", String(200), nullable=False, default=""),
    Column("priority", String(8), nullable=False, default="normal"),  # low | normal | high | urgent
    Column("clinical_at", UtcDateTime(), nullable=False),  # the clock's start (PV1-45, PV1-44...)
    Column("due_at", UtcDateTime(), nullable=False),
    Column("escalation_level", Integer, nullable=False, default=0),
    Column("next_step", Integer, nullable=False, default=0),  # index into the rule's ladder
    Column("next_step_at", UtcDateTime(), nullable=True),  # NULL: nothing more to fire
    Column("opted_out", Boolean, nullable=False, default=False),
    Column("detail", JSON, nullable=False),  # roles allowed, ladder, outcome, cancel reason...
    Column("source_event_id", String(400), nullable=False, default=""),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)
Index("ix_tasks_episode_id", tasks.c.episode_id)
Index("ix_tasks_member_id", tasks.c.member_id)
Index("ix_tasks_assignee_status", tasks.c.assignee_id, tasks.c.status)
# The scheduler's claim of due ladder steps reads this partial index in its order (the claim's
# ORDER BY) and stops at its limit: one entry a task with a step still to fire. On
# (next_step_at) alone, over every task, PostgreSQL's plan kept from the empty table read every
# active task through the status index and sorted them (8.6 ms a claim in bench/e2e, growing
# with the tasks). The claim uses STEPS_PENDING itself (literals, not bound parameters), so
# both databases see that the index applies.
STEPS_PENDING = and_(tasks.c.next_step_at.is_not(None),
                     tasks.c.status.in_([literal_column("'open'"), literal_column("'claimed'")]))
Index("ix_tasks_steps_pending", tasks.c.next_step_at, tasks.c.id,
      sqlite_where=STEPS_PENDING, postgresql_where=STEPS_PENDING)
Index("ix_tasks_status_due", tasks.c.status, tasks.c.due_at)

# Who did what to a task and when (claim, complete, reassign, remind, escalate, cancel).
task_history = Table(
    "task_history",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("task_id", String(40), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(64), nullable=False, default=""),  # staff id, or "system"
    Column("action", String(24), nullable=False),
    Column("detail", JSON, nullable=False),
)
Index("ix_task_history_task_id", task_history.c.task_id, task_history.c.id)

# Episode events the planner has handled (idempotence, as processed_events for ADT events).
planned_events = Table(
    "planned_events",
    metadata,
    Column("event_id", String(400), primary_key=True),
    Column("processed_at", UtcDateTime(), nullable=False),
)

# One notification per recipient and channel; its id is the idempotency key sent with it.
notifications = Table(
    "notifications",
    metadata,
    Column("id", String(80), primary_key=True),
    Column("task_id", String(40), nullable=False),
    Column("recipient_id", String(64), nullable=False),
    Column("channel", String(10), nullable=False),  # inbox | email | webhook
    Column("kind", String(24), nullable=False),  # task_assigned, task_reminder, task_escalated...
    Column("payload", JSON, nullable=False),  # ids, task type, due time, link: never PHI
    Column("status", String(12), nullable=False),  # pending | delivered | failed | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime(), nullable=True),
    Column("last_error", String(300), nullable=False, default=""),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("delivered_at", UtcDateTime(), nullable=True),
    Column("read_at", UtcDateTime(), nullable=True),
)
Index("ix_notifications_due", notifications.c.status, notifications.c.next_attempt_at)
Index("ix_notifications_recipient", notifications.c.recipient_id, notifications.c.channel,
      notifications.c.created_at)
