"""Prometheus metrics, defined once. Labels never carry PHI (facility ids and codes only).

Under ``transcare up`` every process writes to a shared multiprocess directory
(``PROMETHEUS_MULTIPROC_DIR``) and the web server's ``/metrics`` aggregates them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_RECEIVED = Counter(
    "transcare_messages_received_total", "HL7 messages received by the listener",
    ["facility", "type"],
)
ACKS_SENT = Counter("transcare_acks_total", "ACKs sent, by ACK code", ["code"])
REJECTS = Counter(
    "transcare_rejects_total", "Messages answered AE/AR, by error location and table 0357 code",
    ["location", "code"],
)
DUPLICATES = Counter("transcare_duplicates_total", "Resent messages answered from the store")
ACK_LATENCY = Histogram(
    "transcare_ack_latency_seconds", "From a complete frame to its ACK written",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
STORE_BATCH = Histogram(
    "transcare_listener_store_batch_messages",
    "Messages committed in one listener store transaction (group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
FRAMING_ERRORS = Counter(
    "transcare_framing_errors_total", "MLLP framing problems (junk, oversize, partial frame)",
    ["kind"],
)
CONNECTIONS = Gauge(
    "transcare_mllp_connections", "Open MLLP connections", multiprocess_mode="livesum"
)
CONNECTIONS_REFUSED = Counter("transcare_mllp_connections_refused_total",
                              "Connections closed at once (connection limit)", ["reason"])
PUBLISHED = Counter("transcare_relay_published_total", "Stored messages published to adt.raw.v1")
RELAY_ERRORS = Counter("transcare_relay_errors_total", "Relay publish failures (will retry)")
EVENTS_NORMALISED = Counter("transcare_events_normalised_total",
                            "Messages normalised to adt.events.v1", ["type"])
DEADLETTERS = Counter("transcare_deadletters_total",
                      "Messages sent to adt.deadletter.v1, by location", ["location"])
PROCESSING_LATENCY = Histogram(
    "transcare_processing_latency_seconds", "From receipt to canonical event published",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
ADT_EVENTS_HANDLED = Counter(
    "transcare_transitions_events_total",
    "ADT events handled by transitions, by outcome (applied, duplicate, ignored, unmatched = not "
    "enrolled, review, failed) and sending facility", ["outcome", "facility"])
EPISODE_EVENTS = Counter("transcare_episode_events_total",
                         "Episode events written to the outbox for transitions.episodes.v1")
OUTBOX_PUBLISHED = Counter("transcare_outbox_published_total", "Outbox rows published, by topic",
                           ["topic"])
OUTBOX_ERRORS = Counter("transcare_outbox_errors_total", "Outbox publish failures (will retry)")
TRANSITIONS_LATENCY = Histogram(
    "transcare_transitions_latency_seconds", "From receipt of the message to its episode commit",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
FOLLOWUP_ERRORS = Counter("transcare_followup_errors_total",
                          "Follow-up events that could not be planned, by reason", ["reason"])
LADDER_STEPS = Counter("transcare_ladder_steps_total",
                       "Reminders and escalations fired by the follow-up scheduler")
TASK_CHANGES = Counter("transcare_task_changes_total", "Task changes made by the planner")
