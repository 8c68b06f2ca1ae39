"""Notification content, webhook signatures, the retry schedule and error classification.

Pure functions: no sockets, no database.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta

import aiosmtplib
import pytest

from followup.notify.content import (
    Kind,
    Notice,
    email_message,
    from_payload,
    subject,
    task_link,
    to_payload,
    webhook_body,
)
from followup.notify.retry import MAX_ATTEMPTS, SCHEDULE, next_attempt
from followup.notify.senders import DeliveryError, check_status, smtp_error
from followup.notify.signing import headers, sign, verify
from followup.notify.store import notification_id

DUE = datetime(2026, 11, 25, 22, 0, tzinfo=UTC)  # 17:00 EST
NOTICE = Notice(
    notification_id="n-1f2e", kind="task_escalated", task_id="tk-42", episode_id="ep-7",
    task_type="post_discharge_contact", title="Post-discharge contact", due_at=DUE,
    escalation_level=1, priority="high", link=task_link("https://tc.example.org/", "tk-42"),
    time_zone="America/New_York", event_id="ev-9",
)

# Every field a notice may carry. A new field fails this test on purpose: review it for PHI
# (and docs/notifications.md) before adding it here.
ALLOWED_FIELDS = {"notification_id", "kind", "task_id", "episode_id", "task_type", "title",
                  "due_at", "escalation_level", "priority", "link", "time_zone", "event_id"}
BODY_LABELS = {"Notification", "Event", "Task", "Type", "Episode", "Due", "Priority",
               "Escalation level", "Open the task"}
PHI_WORDS = re.compile(r"\b(name|born|birth|dob|sex|phone|zip|mrn|member|diagnos\w*|icd|"
                       r"facility|hospital|visit|disposition|address)\b", re.IGNORECASE)


def test_notice_fields_are_the_reviewed_allowlist() -> None:
    assert {f.name for f in dataclasses.fields(Notice)} == ALLOWED_FIELDS


def test_subject_names_due_time_in_program_zone_type_and_escalation() -> None:
    assert subject(NOTICE) == ("[transcare] Task due 2026-11-25 17:00 EST: post_discharge_contact "
                               "(escalated, level 1, high)")


@pytest.mark.parametrize(("kind", "expected"), [
    ("task_assigned", "[transcare] Task due 2026-11-25 17:00 EST: t (assigned to you)"),
    ("task_reassigned", "[transcare] Task due 2026-11-25 17:00 EST: t (reassigned to you)"),
    ("task_reminder", "[transcare] Task due 2026-11-25 17:00 EST: t (reminder)"),
    ("task_escalated", "[transcare] Task due 2026-11-25 17:00 EST: t (escalated, level 2)"),
    ("task_cancelled", "[transcare] Task cancelled: t"),
    ("episode_alert", "[transcare] Episode alert: ep-7"),
])
def test_subject_by_kind(kind: Kind, expected: str) -> None:
    notice = dataclasses.replace(NOTICE, kind=kind, task_type="t", escalation_level=2,
                                 priority="normal")
    assert subject(notice) == expected


def test_email_carries_ids_type_due_and_link() -> None:
    msg = email_message(NOTICE, "coord@example.org", "transcare@example.org")
    body = msg.get_content()
    assert msg["To"] == "coord@example.org" and msg["From"] == "transcare@example.org"
    assert msg["Message-ID"] == "<n-1f2e@transcare>"
    for text in ("n-1f2e", "tk-42", "ep-7", "post_discharge_contact", "Post-discharge contact",
                 "2026-11-25 17:00 EST", "2026-11-25T22:00:00Z", "level: 1",
                 "https://tc.example.org/inbox#task-tk-42"):
        assert text in body


def test_email_body_has_only_the_known_lines_and_no_phi_words() -> None:
    body = email_message(NOTICE, "coord@example.org", "transcare@example.org").get_content()
    labelled = [line.split(":", 1)[0] for line in body.splitlines() if ": " in line]
    assert set(labelled) == BODY_LABELS
    rendered = body.replace("Patient details are not sent by e-mail", "")
    assert not PHI_WORDS.search(rendered)
    assert "ev-9" not in body  # the event id only derives ids


def test_webhook_body_is_compact_sorted_json_of_the_allowed_fields() -> None:
    body = webhook_body(NOTICE)
    data = json.loads(body)
    assert list(data) == sorted(data)
    assert set(data) == ALLOWED_FIELDS - {"event_id"}
    assert data["due_at"] == "2026-11-25T22:00:00Z" and data["notification_id"] == "n-1f2e"
    assert b" " not in body.replace(b"Post-discharge contact", b"")
    assert webhook_body(NOTICE) == body  # stable
    assert not PHI_WORDS.search(body.decode())


def test_payload_round_trip() -> None:
    assert from_payload(to_payload(NOTICE)) == dataclasses.replace(NOTICE, event_id="")


def test_notice_rejects_unknown_kind_and_naive_due() -> None:
    with pytest.raises(ValueError, match="kind"):
        dataclasses.replace(NOTICE, kind="task_gossip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aware"):
        dataclasses.replace(NOTICE, due_at=datetime(2026, 11, 25, 17))


def test_notification_id_is_deterministic_per_event_recipient_channel() -> None:
    a = notification_id("ev-9", "s1", "email")
    assert a == notification_id("ev-9", "s1", "email") and a.startswith("n-") and len(a) <= 80
    assert len({a, notification_id("ev-9", "s1", "webhook"), notification_id("ev-9", "s2", "email"),
                notification_id("ev-10", "s1", "email")}) == 4


# --- signing -------------------------------------------------------------------------------------

SECRET, T = "whsec-test", 1_790_000_000


def test_signature_round_trip_and_header_format() -> None:
    body = webhook_body(NOTICE)
    header = sign(SECRET, body, T)
    assert re.fullmatch(r"t=1790000000,v1=[0-9a-f]{64}", header)
    assert verify(SECRET, body, header, now=T + 5)


def test_tampered_body_wrong_secret_and_malformed_header_fail() -> None:
    body = webhook_body(NOTICE)
    header = sign(SECRET, body, T)
    assert not verify(SECRET, body.replace(b"tk-42", b"tk-43"), header, now=T)
    assert not verify("other", body, header, now=T)
    assert not verify(SECRET, body, header.replace(f"t={T}", f"t={T + 1}"), now=T)
    for bad in ("", "v1=abc", f"t={T}", "t=x,v1=00", "garbage"):
        assert not verify(SECRET, body, bad, now=T)


def test_stale_or_future_timestamp_is_rejected() -> None:
    body = webhook_body(NOTICE)
    header = sign(SECRET, body, T)
    assert verify(SECRET, body, header, now=T + 300)
    assert not verify(SECRET, body, header, now=T + 301)
    assert not verify(SECRET, body, header, now=T - 301)
    assert verify(SECRET, body, header, now=T + 3600, tolerance_s=3600)


def test_rotated_secret_any_v1_matches() -> None:
    body = b"{}"
    header = f"{sign('old', body, T)},v1={sign(SECRET, body, T).split('v1=')[1]}"
    assert verify(SECRET, body, header, now=T) and verify("old", body, header, now=T)


def test_headers_sent_with_a_webhook() -> None:
    sent = headers(SECRET, b"{}", T, "n-1")
    assert sent["Content-Type"] == "application/json" and sent["User-Agent"] == "transcare"
    assert sent["Idempotency-Key"] == "n-1"
    assert verify(SECRET, b"{}", sent["X-Transcare-Signature"], now=T)
    with pytest.raises(ValueError):
        sign("", b"{}", T)


# --- retry schedule ------------------------------------------------------------------------------

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("attempts", "base"), [
    (1, timedelta(seconds=10)), (2, timedelta(seconds=30)), (3, timedelta(minutes=2)),
    (4, timedelta(minutes=10)), (5, timedelta(minutes=30)), (6, timedelta(hours=1)),
    (7, timedelta(hours=2)),
])
def test_retry_schedule(attempts: int, base: timedelta) -> None:
    for key in ("", "n-a", "n-b", "n-c"):
        at = next_attempt(attempts, NOW, key)
        assert at is not None and base <= at - NOW < base * 1.2
        assert at == next_attempt(attempts, NOW, key)  # deterministic


def test_retry_gives_up_after_the_eighth_failure() -> None:
    assert MAX_ATTEMPTS == 8 and len(SCHEDULE) == 7
    assert next_attempt(8, NOW) is None and next_attempt(20, NOW) is None
    with pytest.raises(ValueError):
        next_attempt(0, NOW)


def test_jitter_spreads_notifications_that_failed_together() -> None:
    assert len({next_attempt(3, NOW, f"n-{i}") for i in range(20)}) > 15


# --- error classification ------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "permanent"), [
    (400, True), (401, True), (404, True), (410, True), (408, False), (429, False),
    (500, False), (502, False), (503, False), (301, False),
])
def test_webhook_status_classification(status: int, permanent: bool) -> None:
    with pytest.raises(DeliveryError) as caught:
        check_status(status)
    assert caught.value.permanent is permanent and caught.value.reason == f"webhook: HTTP {status}"


def test_webhook_2xx_is_delivered() -> None:
    for status in (200, 201, 202, 204):
        check_status(status)


@pytest.mark.parametrize(("exc", "permanent", "reason"), [
    (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no <a@b.org>", "a@b.org")]),
     True, "email: recipient refused (550)"),
    (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(451, "later", "a@b.org")]),
     False, "email: recipient refused (451)"),
    (aiosmtplib.SMTPDataError(554, "rejected"), True, "email: message refused (554)"),
    (aiosmtplib.SMTPDataError(451, "later"), False, "email: message refused (451)"),
    (aiosmtplib.SMTPAuthenticationError(535, "bad"), False,
     "email: server answered 535 (SMTPAuthenticationError)"),
    (aiosmtplib.SMTPConnectError("refused"), False,
     "email: cannot reach the SMTP server (SMTPConnectError)"),
    (aiosmtplib.SMTPReadTimeoutError("slow"), False, "email: no answer within 10s"),
])
def test_smtp_error_classification(exc: Exception, permanent: bool, reason: str) -> None:
    error = smtp_error(exc, 10)
    assert (error.permanent, error.reason) == (permanent, reason)
    assert "a@b.org" not in error.reason
