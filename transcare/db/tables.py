"""The relational schema (SQLAlchemy Core). Alembic migrations in ``migrations/`` create it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes stored as UTC and always read back aware (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database: use an aware datetime")
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

Index("ix_messages_unpublished", messages.c.published_at, messages.c.status, messages.c.id)
Index("ix_messages_status", messages.c.status)
Index("ix_messages_received_at", messages.c.received_at)
