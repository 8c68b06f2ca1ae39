"""Kafka topics: names, partition counts and keys, in one place.

Every topic is keyed by the patient, so one patient's events stay in order on one partition:
the ADT topics by ``value@authority`` of the first PID-3 identifier (or MRG-1 when PID-3 is
empty), the topics after roster matching by the program member id.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    value_schema: str
    description: str


ADT_RAW = TopicSpec("adt.raw.v1", "patient_key", "raw_message.v1",
                    "stored messages as received (decoded text), published by the relay")
ADT_EVENTS = TopicSpec("adt.events.v1", "patient_key", "adt_event.v1",
                       "canonical ADT events, from the normaliser")
ADT_DEADLETTER = TopicSpec("adt.deadletter.v1", "patient_key", "deadletter.v1",
                           "messages the normaliser could not map, with the reason")

EPISODES = TopicSpec("transitions.episodes.v1", "member_id", "episode_event.v1",
                     "episode changes (opened, transferred, discharged, ...), from transitions")

TASKS = TopicSpec("followup.tasks.v1", "member_id", "task_event.v1",
                  "task changes: created, claimed, completed, reassigned, cancelled, reminded, "
                  "escalated")
NOTIFICATIONS = TopicSpec("followup.notifications.v1", "member_id", "notification.v1",
                          "one notification per person and channel (inbox, e-mail, webhook)")

ALL_TOPICS = (ADT_RAW, ADT_EVENTS, ADT_DEADLETTER, EPISODES, TASKS, NOTIFICATIONS)
DEFAULT_PARTITIONS = 8


def partition_key(patient_key: str, fallback: str) -> bytes:
    """The Kafka key bytes: the patient key, or a stable fallback (message id) when empty."""
    return (patient_key or fallback).encode("utf-8")
