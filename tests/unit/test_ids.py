"""Deterministic ids: the same text as the standard library's UUID 5, so ids stored by
earlier versions are derived again on a replay."""

from __future__ import annotations

import random
import uuid

import pytest

from followup.notify.store import notification_id
from followup.task import task_id
from transitions.episode import episode_id
from transitions.ids import uuid5_hex, uuid5_text

NAMES = ["", "a", "visit|GENHOSP|V1", "ev-1|C1|inbox", "Ünïcode|名前|\u0000|\U0001f600", "x" * 500]


@pytest.mark.parametrize("namespace", [uuid.NAMESPACE_DNS, uuid.UUID(int=0),
                                       uuid.UUID(int=(1 << 128) - 1), uuid.uuid4()])
def test_the_standard_librarys_uuid5(namespace: uuid.UUID) -> None:
    rng = random.Random(str(namespace))
    names = NAMES + ["".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 60)))
                     for _ in range(3000)]
    text, hex_ = uuid5_text(namespace), uuid5_hex(namespace)
    for name in names:
        expected = uuid.uuid5(namespace, name)
        assert text(name) == str(expected)
        assert hex_(name) == expected.hex


def test_the_ids_of_episodes_tasks_and_notifications_are_those_stored_before() -> None:
    """Values derived by the uuid.uuid5 code these functions used before (a replay of a
    store written then must find the same rows)."""
    assert episode_id("GENHOSP", "V1", "M1", "e1") == "ep-bfbcb97d-ebf7-57ad-9b7f-ed7326a73a17"
    assert episode_id("GENHOSP", None, "M1", "e1") == "ep-b14eed2e-515b-5cf8-b1b2-3c9aefeb2220"
    assert task_id("post_discharge_contact", "ev-9") == "t-5f68be0e-0327-5525-b081-d1024c04e93f"
    assert notification_id("ev-9", "C1", "inbox") == "n-07824b3b75cc50018208ff82774f17c4"
