"""The ops page: counts, backlog and the latest problems, with nothing unreadable in it."""

from __future__ import annotations

from datetime import UTC, datetime

from adt_listener.store import StoredMessage
from transcare.web.dashboard import render_dashboard


def test_problems_are_listed_with_their_reasons_and_control_characters_are_neutralised() -> None:
    row = StoredMessage(7, "ELAB\x963", "C<1>", "ADT^A01", datetime(2026, 1, 2, tzinfo=UTC), "AR",
                        "rejected", "MSH-18: byte 0x96 at offset 21 is not valid ASCII", None,
                        None)
    page = render_dashboard({"processed": 5, "rejected": 1}, 3, [row])
    assert "MSH-18: byte 0x96" in page and "C&lt;1&gt;" in page
    assert "\x96" not in page and "ELAB\ufffd3" in page
    assert ">5</b><span>processed" in page and ">3</b><span>relay backlog" in page


def test_the_age_of_the_oldest_message_in_flight_is_shown_and_red_when_late() -> None:
    calm = render_dashboard({"accepted": 2}, 0, [], {"oldest_in_flight_s": 0.4,
                                                      "open_episodes": {}, "reviews_pending": 0,
                                                      "outbox_backlog": 0, "enrolled": 0})
    assert '<div class="card"><b>0</b><span>oldest in flight (s)' in calm
    late = render_dashboard({"accepted": 900}, 0, [], {"oldest_in_flight_s": 42.0,
                                                        "open_episodes": {}, "reviews_pending": 0,
                                                        "outbox_backlog": 0, "enrolled": 0})
    assert '<div class="card bad"><b>42</b><span>oldest in flight (s)' in late


def _with_notifications(notes: dict[tuple[str, str], int],
                        unconfigured: tuple[str, ...]) -> str:
    return render_dashboard({}, 0, [], {
        "oldest_in_flight_s": 0.0, "open_episodes": {}, "reviews_pending": 0, "outbox_backlog": 0,
        "enrolled": 0, "tasks": {"open": 3}, "notifications": notes,
        "unconfigured_channels": unconfigured})


def test_notifications_of_a_channel_nobody_configured_wait_and_are_not_failing() -> None:
    notes = {("email", "failed"): 7, ("email", "pending"): 1, ("webhook", "failed"): 2,
             ("webhook", "dead"): 1, ("inbox", "delivered"): 9}
    page = _with_notifications(notes, ("email",))
    assert '<div class="card bad"><b>3</b><span>deliveries failing' in page  # webhooks only
    assert "<b>8</b><span>e-mail not configured: waiting (set TRANSCARE_SMTP_HOST)" in page
    configured = _with_notifications(notes, ())
    assert "<b>10</b><span>deliveries failing" in configured
    assert "not configured" not in configured


def test_the_live_section_shows_the_last_minute_by_facility_with_problems_in_red() -> None:
    from transcare.web.live import Live

    live = Live(seconds=60.0, rates={"GENHOSP": 12.5, "ST<M>": 0.25}, acks={"AA": 700, "AR": 3},
                deadletters=2, ack_p50=0.0008, ack_p99=0.0031, episode_p50=0.21,
                episode_p99=0.84)
    page = render_dashboard({}, 0, [], None, live)
    assert "<h2>Live (last 60 s)</h2>" in page
    assert '<div class="card"><b>12.8</b><span>messages a second' in page
    assert '<div class="card"><b>700</b><span>ACK AA' in page
    assert '<div class="card"><b>0</b><span>ACK AE' in page  # shown, and calm, when none
    assert '<div class="card bad"><b>3</b><span>ACK AR' in page
    assert '<div class="card bad"><b>2</b><span>dead letters' in page
    assert "0.8 ms / 3.1 ms</b><span>ACK latency p50 / p99" in page
    assert "0.21 s / 0.84 s</b><span>MLLP in to episode p50 / p99" in page
    assert page.index("GENHOSP</td><td>12.50") < page.index("ST&lt;M&gt;</td><td>0.25")
    waiting = render_dashboard({}, 0, [], None, None)
    assert "measuring: the first figures" in waiting


def test_each_stages_consumer_lag_is_shown_and_red_when_far_behind() -> None:
    from transcare.web.metrics_view import render_metrics

    stats = {"oldest_in_flight_s": 0.0, "open_episodes": {}, "reviews_pending": 0,
             "outbox_backlog": 0, "enrolled": 0,
             "consumer_lag": {"normaliser": 999, "transitions": 1000, "followup": None}}
    page = render_dashboard({}, 0, [], stats)
    assert '<div class="card"><b>999</b><span>consumer lag: normaliser' in page
    assert '<div class="card bad"><b>1,000</b><span>consumer lag: transitions' in page  # red from 1,000
    assert '<div class="card"><b>-</b><span>consumer lag: follow-up' in page  # no reading
    body, _ = render_metrics(0, {}, stats)
    assert 'transcare_consumer_lag_records{stage="transitions"} 1000' in body
    assert 'transcare_consumer_lag_records{stage="normaliser"} 999' in body
    assert 'stage="followup"' not in body


def test_without_the_other_processes_metrics_the_live_section_says_so() -> None:
    """Regression (review): a web process running apart (deploy/README.md) saw only its own
    metrics and showed 0 messages a second, a quiet feed, instead of no figures."""
    from transcare.web.live import Live

    live = Live(60.0, {}, {}, 0, None, None, None, None)
    page = render_dashboard({}, 0, [], None, live, live_shared=False)
    assert "not available: this web process does not see" in page
    assert "messages a second" not in page
