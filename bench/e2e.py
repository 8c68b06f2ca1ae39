"""End-to-end benchmark: MLLP in, episodes and tasks committed, with 20% of messages enrolled.

Usage::

    python -m bench.e2e                # default run (20,000 messages, 500 msg/s for 20 s)
    python -m bench.e2e --quick        # smoke run
    python -m bench.e2e --database-url postgresql://postgres@127.0.0.1:5432/test
    python -m bench.e2e --profile      # also run the worker's code in-process, timed and
                                       # under cProfile, to say where the time goes

Phases (all traffic goes to 127.0.0.1, every phase is bounded by count and time):

1. Baseline: the MLLP echo server of ``bench.common``, 1 and 8 connections, same client code.
2. Service: embedded broker, fresh data dir (PostgreSQL: a fresh database created on the given
   server and dropped at the end), ``transcare db upgrade``, a roster (``--members``, default
   2,000, identifiers ``E{n}@GENHOSP``) and a staff directory (coordinators C1..C10 in two
   teams, C3 away and covered by C4, supervisors, a program manager) loaded with
   ``SqlAlchemyDirectory``, then the workers as ``transcare up`` runs them (``transcare worker
   --stages normaliser`` and ``--stages transitions,followup``; ``--workers N``: N of the
   latter, as ``TRANSCARE_STREAM_WORKERS=N`` runs them on PostgreSQL; ``--no-split``: full
   workers)
   and ``transcare listener`` as processes;
   a small warm-up feed is sent and fully processed before anything is measured.
3./4. Throughput: ``--messages`` realistic ADT messages (ED visits, admissions via the ED,
   direct admissions, transfers, discharges with PV1-36/PV1-45, A08 updates, outpatient
   registrations; 20% of the messages for enrolled patients, 80% for unknown patients) over 8
   MLLP connections, each waiting for its ACK; every patient's messages go over one connection,
   in order. Then wait until ``processed_events`` holds one row per accepted message
   (dead-lettered ones excepted), every episode event is planned by the follow-up planner
   (``planned_events``) and the outbox has no unpublished row. End-to-end rate = messages /
   (first send -> all of that observed), the processing lag (``messages.received_at`` ->
   ``processed_events.processed_at``) and the lag to tasks (-> ``planned_events``).
5. Lag at a fixed rate: ``--rate`` messages/s paced over 8 connections for ``--seconds``;
   processing lag p50/p99/max split by stage, and the achieved rate.
6. Sanity: outcomes per message (enrolled -> matched, unknown -> unmatched), episodes per
   enrolled patient against what the generator sent (kind and status), no visit with two
   episodes, every episode event planned, worker and listener logs free of errors and warnings.

The table is printed at the end and the figures are written to
``bench/results/e2e-latest.json`` (SQLite) or ``e2e-pg-latest.json`` (``--database-url``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import heapq
import io
import json
import os
import platform
import pstats
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.common import (
    AdtGenerator,
    EchoServer,
    LoadResult,
    install_uvloop,
    percentile,
    print_table,
    read_cpu_seconds,
    run_load,
    stop_process,
)
from bench.ingest import Listener, add_gather_option, db_upgrade, gather_env, transcare_command

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "e2e-latest.json"
RESULTS_PG = RESULTS.with_name("e2e-pg-latest.json")  # runs with --database-url
SENDERS = 8
FACILITY = "GENHOSP"
ENROLLED_SHARE = 0.20
WARMUP_MESSAGES = 200

EPISODES_TOPIC = "transitions.episodes.v1"  # schemas.topics.EPISODES

TARGET_RATE = 2_000.0  # end to end, messages/s
TARGET_LAG_P99_S = 1.0  # processing lag p99 at 500 messages/s


# --------------------------------------------------------------------------------------------
# Options


@dataclass
class Options:
    messages: int = 20_000
    echo_messages: int = 40_000
    rate: float = 500.0
    seconds: float = 20.0
    members: int = 2_000
    workers: int = 1
    split: bool = True
    database_url: str = ""
    max_phase_seconds: float = 300.0
    profile: bool = False
    profile_batch: int = 500
    profile_worker: bool = False
    keep: bool = False
    quick: bool = False
    seed: int = 11
    listener_gather_ms: float | None = None


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=None,
                   help="messages in the throughput phase (default 20000)")
    p.add_argument("--rate", type=float, default=500.0,
                   help="messages/s in the fixed-rate lag phase (default 500)")
    p.add_argument("--seconds", type=float, default=None,
                   help="length of the fixed-rate phase in seconds (default 20)")
    p.add_argument("--members", type=int, default=2_000,
                   help="roster size (default 2000; grown if the feed needs more)")
    p.add_argument("--workers", type=int, default=None,
                   help="transitions and follow-up worker processes in their consumer group "
                        "(default 1, as `transcare up` runs them; on PostgreSQL "
                        "TRANSCARE_STREAM_WORKERS sets how many it runs)")
    p.add_argument("--no-split", dest="split", action="store_false",
                   help="run --workers full worker processes (every stage) instead of what "
                        "`transcare up` runs: a normaliser process "
                        "(TRANSCARE_WORKER_STAGES=normaliser) beside --workers processes "
                        "running transitions and follow-up")
    p.add_argument("--database-url", default="",
                   help="PostgreSQL server to run on, e.g. postgresql://postgres@127.0.0.1/x: "
                        "a fresh database is created on it for the run and dropped after")
    p.add_argument("--max-phase-seconds", type=float, default=300.0,
                   help="bound of each load phase and of each wait for processing "
                        "(default 300)")
    p.add_argument("--profile", action="store_true",
                   help="afterwards, run the worker's code (normalise, record, transitions) "
                        "in-process under cProfile over the throughput phase's messages")
    p.add_argument("--profile-batch", type=int, default=500,
                   help="batch size of the in-process profile (the worker takes up to 500)")
    p.add_argument("--profile-worker", action="store_true",
                   help="run the worker process itself with every thread under cProfile "
                        "(CPU time per thread); its figures are then slower than normal, so "
                        "use a separate run; summarised by area and function")
    add_gather_option(p)
    p.add_argument("--keep", action="store_true",
                   help="keep the temp data dir and logs (and the PostgreSQL database)")
    p.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    a = p.parse_args(argv)
    workers = a.workers if a.workers is not None else 1
    opts = Options(rate=a.rate, members=a.members, workers=max(1, workers), split=a.split,
                   database_url=a.database_url, max_phase_seconds=a.max_phase_seconds,
                   profile=a.profile, profile_batch=max(1, a.profile_batch),
                   profile_worker=a.profile_worker, keep=a.keep,
                   quick=a.quick, listener_gather_ms=a.listener_gather_ms)
    if a.quick:
        opts.messages, opts.echo_messages, opts.seconds = 3_000, 8_000, 5.0
    if a.messages is not None:
        opts.messages = a.messages
    if a.seconds is not None:
        opts.seconds = a.seconds
    return opts


# --------------------------------------------------------------------------------------------
# The feed: patients, their visits, and the ADT messages those visits produce


_ROSTER_FIRST = [("JANE", "F"), ("MARIA", "F"), ("ANN", "F"), ("JOHN", "M"), ("ROBERT", "M"),
                 ("LINDA", "F"), ("JAMES", "M"), ("PATRICIA", "F"), ("MICHAEL", "M"),
                 ("SUSAN", "F"), ("DOROTHY", "F"), ("GEORGE", "M")]
_ROSTER_LAST = ["DOE", "SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER",
                "DAVIS", "RODRIGUEZ", "MARTINEZ", "HERNANDEZ", "LOPEZ", "WILSON", "ANDERSON",
                "TAYLOR"]
# Unknown patients: other names and birth dates from 1950 on (the roster's are 1925-1949), so
# demographic matching finds no candidate for them.
_OTHER_FIRST = [("AIKO", "F"), ("OMAR", "M"), ("INGRID", "F"), ("RAVI", "M"), ("CHIARA", "F"),
                ("DMITRI", "M"), ("FATIMA", "F"), ("KENJI", "M"), ("NADIA", "F"),
                ("SEAMUS", "M"), ("AMARA", "F"), ("TOMAS", "M")]
_OTHER_LAST = ["NGUYEN", "KIM", "PATEL", "OKAFOR", "SCHMIDT", "ROSSI", "KOWALSKI", "HASSAN",
               "TANAKA", "IVANOV", "SILVA", "MURPHY", "COHEN", "ALI", "LARSEN", "DUBOIS"]
_STREETS = ["MAIN ST", "OAK AVE", "MAPLE DR", "CEDAR LN", "ELM ST", "PINE RD", "LAKE VIEW BLVD"]
_CITIES = [("SPRINGFIELD", "IL", "62701"), ("BOSTON", "MA", "02118"),
           ("COLUMBUS", "OH", "43215"), ("DENVER", "CO", "80204"), ("AUSTIN", "TX", "78701")]
_WARDS = ["4WEST", "5EAST", "3NORTH", "6SOUTH", "ICU", "CCU", "TELE"]
_SERVICES = ["MED", "MED", "MED", "SUR", "CAR", "PUL", "NEU"]
_DIAGNOSES = ["I50.9^Heart failure, unspecified", "J18.9^Pneumonia, unspecified organism",
              "J44.1^Chronic obstructive pulmonary disease with exacerbation",
              "N17.9^Acute kidney failure, unspecified", "I63.9^Cerebral infarction, unspecified",
              "A41.9^Sepsis, unspecified organism", "E11.65^Type 2 diabetes with hyperglycemia",
              "R07.9^Chest pain, unspecified", "S72.001A^Fracture of neck of femur"]
_DOCTORS = ["1234567890^ATTEND^ANN^M^^^MD", "1987654321^WELBY^MARCUS^^^^MD",
            "1122334455^HOUSE^GREGORY^^^^MD", "1555666777^GREY^MEREDITH^^^^MD"]
_PAYERS = ["MCR^MEDICARE", "BCBS^BLUE CROSS", "AET^AETNA", "MCD^MEDICAID"]
# Discharge dispositions (PV1-36, UB-04) and where to (PV1-37).
_DISPOSITIONS = [("01", "HOME"), ("01", "HOME"), ("01", "HOME"), ("06", "HOME HEALTH"),
                 ("03", "SNF"), ("62", "IRF")]
# Visit scenarios and their weights.
SCENARIOS = (("ed", 35), ("ed_admit", 25), ("direct", 12), ("still_in", 13), ("outpatient", 15))
_STRUCTURE = {"A01": "ADT_A01", "A02": "ADT_A02", "A03": "ADT_A03", "A04": "ADT_A01",
              "A08": "ADT_A01"}


@dataclass
class Patient:
    identifier: str  # PID-3.1
    member_no: int | None  # roster number when enrolled
    family: str
    given: str
    sex: str
    birth_date: dt.date
    phone: str  # 10 digits
    street: str
    city: str
    state: str
    zip: str
    account: str

    @property
    def member_id(self) -> str | None:
        return None if self.member_no is None else member_id(self.member_no)


def member_id(n: int) -> str:
    return f"M{n:05d}"


@dataclass
class Visit:
    patient: Patient
    scenario: str
    messages: list[Msg] = field(default_factory=list)

    def expected(self) -> tuple[str, str] | None:
        """(kind, status) of the episode the sent messages make, None for no episode."""
        sent = [m for m in self.messages if m.sent]
        if any(m.trigger == "A01" for m in sent):
            kind = "inpatient"
        elif any(m.trigger == "A04" and m.patient_class == "E" for m in sent):
            kind = "ed"
        else:
            return None
        return kind, "discharged" if any(m.trigger == "A03" for m in sent) else "open"


@dataclass
class Msg:
    when: dt.datetime  # local time at the facility
    order: int  # position in the patient's sequence
    visit: Visit
    trigger: str
    patient_class: str
    visit_number: str
    bed: tuple[str, str, str] = ("", "", "")  # PV1-3
    x: dict[str, Any] = field(default_factory=dict)  # the other fields of the message
    body: bytes = b""
    sent: bool = True


@dataclass
class Feed:
    """One phase's messages: a chronological list per connection."""

    connections: list[list[Msg]]
    visits: list[Visit]
    _next: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(len(c) for c in self.connections)

    @property
    def enrolled_messages(self) -> int:
        return sum(1 for c in self.connections for m in c if m.sent and m.visit.patient.member_no)

    def mark_unsent(self) -> None:
        """After a load cut short (time limit, sender error): messages never taken were
        not sent, so the expected episodes follow what was."""
        for lane, taken in zip(self.connections, self._next or [0] * len(self.connections),
                               strict=True):
            for m in lane[taken:]:
                m.sent = False

    def message_for(self, index: int) -> bytes | None:
        """The next message of connection ``index`` (None when it has sent all of its own)."""
        if not self._next:
            self._next = [0] * len(self.connections)
        at = self._next[index]
        if at >= len(self.connections[index]):
            return None
        self._next[index] = at + 1
        return self.connections[index][at].body

    def scenarios(self) -> Counter[str]:
        return Counter(v.scenario for v in self.visits)


class FeedGenerator:
    """Patients with plausible visit sequences; distinct MSH-10 per message and PV1-19 per
    visit; enrolled patients are roster members ``E{n}@GENHOSP``, numbered from 1 across the
    run's phases."""

    def __init__(self, run_id: str, seed: int, now: dt.datetime) -> None:
        self.run = run_id
        self.rng = random.Random(seed)
        self.now = now  # facility-local "now"; every message time is at least 1 h before it
        self.members: list[Patient] = []
        self._patients = 0
        self._visits = 0
        self._controls = 0
        self.weights = [w for _, w in SCENARIOS]
        self.names = [s for s, _ in SCENARIOS]

    # ---- patients

    def patient(self, enrolled: bool) -> Patient:
        rng = self.rng
        self._patients += 1
        if enrolled:
            n = len(self.members) + 1
            given, sex = _ROSTER_FIRST[rng.randrange(len(_ROSTER_FIRST))]
            family = _ROSTER_LAST[rng.randrange(len(_ROSTER_LAST))]
            born = dt.date(1925, 1, 1) + dt.timedelta(days=rng.randrange(25 * 365))
            ident = f"E{n}"
        else:
            n = None
            given, sex = _OTHER_FIRST[rng.randrange(len(_OTHER_FIRST))]
            family = _OTHER_LAST[rng.randrange(len(_OTHER_LAST))]
            born = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(55 * 365))
            ident = f"U{self.run}{self._patients:06d}"
        city, state, zipcode = _CITIES[rng.randrange(len(_CITIES))]
        p = Patient(ident, n, family, given, sex, born, f"555{rng.randrange(10**7):07d}",
                    f"{rng.randrange(10, 9999)} {_STREETS[rng.randrange(len(_STREETS))]}",
                    city, state, zipcode, f"A{self.run}{self._patients:06d}")
        if enrolled:
            self.members.append(p)
        return p

    # ---- visits

    def visits(self, patient: Patient) -> list[Visit]:
        """One visit (80%) or two (20%, 1-5 days apart), each a plausible message sequence.

        The patient's timeline is then moved so that its last message happened between 5
        minutes and 24 hours ago, as in a live feed: discharges are recent, so follow-up tasks
        are created on time rather than already overdue (stays still began days ago)."""
        rng = self.rng
        count = 2 if rng.random() < 0.2 else 1
        start = self.now - dt.timedelta(days=60)  # provisional: shifted below
        out: list[Visit] = []
        for k in range(count):
            scenario = rng.choices(self.names, self.weights)[0]
            if scenario == "still_in" and k < count - 1:
                scenario = "ed_admit"  # an open stay can only be the latest visit
            visit = Visit(patient, scenario)
            end = self._sequence(visit, start)
            out.append(visit)
            start = end + dt.timedelta(days=rng.uniform(1, 5))
        last = max(m.when for v in out for m in v.messages)
        delta = self.now - dt.timedelta(minutes=rng.uniform(5, 24 * 60)) - last
        for v in out:
            for m in v.messages:
                m.when += delta
                m.x = {k: val + delta if isinstance(val, dt.datetime) else val
                       for k, val in m.x.items()}
                m.body = self._message(m)
        return out

    def _visit_number(self) -> str:
        self._visits += 1
        return f"V{self.run}{self._visits:07d}"

    def _sequence(self, visit: Visit, t0: dt.datetime) -> dt.datetime:
        """Append the visit's messages; returns the time of its last one."""
        rng = self.rng
        h = dt.timedelta(hours=1)
        number = self._visit_number()
        doctor = _DOCTORS[rng.randrange(len(_DOCTORS))]
        diagnosis = _DIAGNOSES[rng.randrange(len(_DIAGNOSES))]
        payer = _PAYERS[rng.randrange(len(_PAYERS))]
        ed_bed = ("ED", f"{rng.randrange(1, 40)}", rng.choice("AB"))
        ward = (_WARDS[rng.randrange(len(_WARDS))], f"{rng.randrange(100, 499)}", rng.choice("AB"))
        ward2 = (_WARDS[rng.randrange(len(_WARDS))], f"{rng.randrange(100, 499)}", rng.choice("AB"))
        service = _SERVICES[rng.randrange(len(_SERVICES))]
        disposition, to = _DISPOSITIONS[rng.randrange(len(_DISPOSITIONS))]
        ctx = dict(doctor=doctor, diagnosis=diagnosis, payer=payer)
        s = visit.scenario

        def add(trigger: str, cls: str, when: dt.datetime, bed: tuple[str, str, str],
                vnum: str = number, **pv1: Any) -> None:
            m = Msg(when, len(visit.messages), visit, trigger, cls, vnum, bed=bed,
                    x={**ctx, **pv1})
            visit.messages.append(m)

        if s in ("ed", "ed_admit", "still_in"):
            arrived = t0
            ed: dict[str, Any] = dict(service="EM", admission_type="E", source="7", admitted=arrived)
            add("A04", "E", arrived, ed_bed, **ed)
            if rng.random() < 0.5:
                add("A08", "E", arrived + h * rng.uniform(0.3, 1.5), ed_bed, **ed)
            if s == "ed":
                left = arrived + h * rng.uniform(2, 6.5)
                add("A03", "E", left, ed_bed, **ed, discharged=left, disposition="01",
                    discharged_to="HOME")
                return left
            admitted = arrived + h * rng.uniform(3, 6)
            # Half the feeds keep the ED visit number for the stay, half give a new one.
            stay = number if rng.random() < 0.5 else self._visit_number()
            ip: dict[str, Any] = dict(service=service, admission_type="E", source="7", admitted=admitted)
            add("A01", "I", admitted, ward, stay, **ip)
            last = admitted
            if rng.random() < 0.7 or s == "ed_admit":
                last = admitted + h * rng.uniform(6, 20)
                add("A02", "I", last, ward2, stay, prior=ward, **ip)
                ward = ward2
            if s == "still_in":
                return last
            if rng.random() < 0.4:
                last = last + h * rng.uniform(2, 20)
                add("A08", "I", last, ward, stay, **ip)
            left = admitted + dt.timedelta(days=rng.uniform(2, 8))
            add("A03", "I", left, ward, stay, **ip, discharged=left, disposition=disposition,
                discharged_to=to)
            return left
        if s == "direct":
            admitted = t0
            ip = dict(service=service, admission_type="EL", source="1", admitted=admitted)
            add("A01", "I", admitted, ward, **ip)
            if rng.random() < 0.5:
                add("A02", "I", admitted + h * rng.uniform(4, 30), ward2, prior=ward, **ip)
                ward = ward2
            left = admitted + dt.timedelta(days=rng.uniform(2, 8))
            add("A03", "I", left, ward, **ip, discharged=left, disposition=disposition,
                discharged_to=to)
            return left
        # outpatient registration (clinic, lab): no episode
        op: dict[str, Any] = dict(service="OPD", admission_type="R", source="1", admitted=t0)
        clinic = ("CLINIC", f"{rng.randrange(1, 20)}", "")
        add("A04", "O", t0, clinic, **op)
        if rng.random() < 0.5:
            add("A08", "O", t0 + h * rng.uniform(0.2, 2), clinic, **op)
        return t0 + 2 * h

    def _control_id(self) -> str:
        self._controls += 1
        return f"{self.run}{self._controls:08d}"

    def _message(self, m: Msg) -> bytes:
        p, bed, x = m.visit.patient, m.bed, m.x
        rng = self.rng
        ts = _ts(m.when)
        pv1 = [""] * 46
        pv1[0], pv1[1], pv1[2] = "PV1", "1", m.patient_class
        pv1[3] = f"{bed[0]}^{bed[1]}^{bed[2]}^{FACILITY}"
        pv1[4] = x.get("admission_type", "")
        if x.get("prior"):
            prior = x["prior"]
            pv1[6] = f"{prior[0]}^{prior[1]}^{prior[2]}^{FACILITY}"
        pv1[7] = pv1[17] = x["doctor"]
        pv1[10] = x.get("service", "")
        pv1[14] = x.get("source", "")
        pv1[18] = {"E": "ER", "I": "IN", "O": "OP"}[m.patient_class]
        pv1[19] = f"{m.visit_number}^^^{FACILITY}^VN"
        pv1[36] = x.get("disposition", "")
        pv1[37] = x.get("discharged_to", "")
        pv1[44] = _ts(x["admitted"]) if x.get("admitted") else ""
        pv1[45] = _ts(x["discharged"]) if x.get("discharged") else ""
        sex = p.sex
        segments = [
            f"MSH|^~\\&|EPICADT|{FACILITY}|TRANSCARE|TRANSCARE|{ts}||ADT^{m.trigger}^"
            f"{_STRUCTURE[m.trigger]}|{self._control_id()}|P|2.5.1",
            f"EVN|{m.trigger}|{ts}|||JSMITH^SMITH^JOHN^^^^^^{FACILITY}|{ts}",
            f"PID|1||{p.identifier}^^^{FACILITY}^MR||{p.family}^{p.given}||"
            f"{p.birth_date:%Y%m%d}|{sex}|||{p.street}^^{p.city}^{p.state}^{p.zip}^USA^H||"
            f"({p.phone[:3]}){p.phone[3:6]}-{p.phone[6:]}^PRN^PH|||M||"
            f"{p.account}^^^{FACILITY}^AN",
            f"PD1|||GENERAL HOSPITAL^^1234|{x['doctor']}",
            f"NK1|1|{p.family}^PAT|SPO^Spouse|||(555)555-{rng.randrange(10000):04d}",
            "|".join(pv1),
        ]
        if m.trigger != "A02":
            segments += [
                f"DG1|1||{x['diagnosis']}^I10||{ts}|{'F' if m.trigger == 'A03' else 'A'}",
                "AL1|1|DA|70618^Penicillin^RXNORM|MO|Hives",
                f"IN1|1|{x['payer']}|{rng.randrange(1000, 9999)}|PAYER INC|"
                f"PO BOX 100^^{p.city}^{p.state}^{p.zip}||||GRP{rng.randrange(100, 999)}"
                f"|||||||{p.family}^{p.given}|SEL|{p.birth_date:%Y%m%d}",
            ]
        return ("\r".join(segments) + "\r").encode("ascii")

    # ---- a phase

    def feed(self, total: int, connections: int = SENDERS) -> Feed:
        """Patients until ``total`` messages, 20% of them for enrolled patients; each patient on
        one connection (the least loaded), each connection's messages in time order; the
        feed cut to exactly ``total`` by dropping the latest messages (visits in progress)."""
        visits: list[Visit] = []
        lanes: list[list[Msg]] = [[] for _ in range(connections)]
        heap = [(0, i) for i in range(connections)]
        count = enrolled = 0
        while count < total:
            p = self.patient(enrolled <= ENROLLED_SHARE * count)
            vs = self.visits(p)
            msgs = [m for v in vs for m in v.messages]
            if not msgs:
                continue
            load, index = heapq.heappop(heap)
            lanes[index].extend(msgs)
            heapq.heappush(heap, (load + len(msgs), index))
            visits.extend(vs)
            count += len(msgs)
            if p.member_no:
                enrolled += len(msgs)
        for lane in lanes:
            lane.sort(key=lambda m: m.when)
        while count > total:
            max(lanes, key=len).pop().sent = False
            count -= 1
        return Feed(lanes, visits)


def _ts(moment: dt.datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S")


def roster(members: list[Patient], size: int, rng: random.Random) -> list[Any]:
    """Members for every enrolled patient of the feed, plus more up to ``size``."""
    from transitions.model import Member, MemberIdentifier

    today = dt.date.today()
    people = list(members)
    gen = FeedGenerator("R", rng.randrange(10**6), dt.datetime.now())
    gen.members = list(members)
    while len(people) < size:
        people.append(gen.patient(enrolled=True))
    out = []
    for p in people:
        assert p.member_no is not None
        out.append(Member(
            member_id=member_id(p.member_no), family_name=p.family, given_name=p.given,
            birth_date=p.birth_date, sex=p.sex, phone=p.phone, zip=p.zip,
            identifiers=(MemberIdentifier(p.identifier.upper(), FACILITY),),
            tier=rng.choice(["low", "low", "medium", "high"]),
            coordinator_id=f"C{(p.member_no - 1) % 10 + 1}", program="TCM",
            enrolled_from=today - dt.timedelta(days=400)))
    return out


def staff() -> list[Any]:
    """Coordinators C1..C10 in two teams (C3 away, covered by C4), two supervisors, a PM."""
    from transitions.model import StaffMember

    today = dt.date.today()
    people = []
    for n in range(1, 11):
        team, supervisor = ("north", "S1") if n <= 5 else ("south", "S2")
        backup = f"C{n + 1 if n % 5 else n - 4}"
        away = (today - dt.timedelta(days=60), today + dt.timedelta(days=30)) if n == 3 \
            else (None, None)
        people.append(StaffMember(f"C{n}", f"Coordinator {n}", "care_coordinator", team,
                                  supervisor, backup, away_from=away[0], away_to=away[1],
                                  capacity=400))
    people.append(StaffMember("S1", "Supervisor North", "supervisor", "north"))
    people.append(StaffMember("S2", "Supervisor South", "supervisor", "south"))
    people.append(StaffMember("P1", "Program Manager", "program_manager", ""))
    return people


async def enrol(database_url: str, members: list[Any]) -> None:
    from transcare.db.database import open_database
    from transitions.directory_store import SqlAlchemyDirectory

    db = open_database(database_url)
    try:
        directory = SqlAlchemyDirectory(db)
        report = await directory.upsert_members(members)
        if getattr(report, "errors", None):
            raise RuntimeError(f"roster import errors: {report.errors[:3]}")
        await directory.upsert_staff(staff())
    finally:
        await db.dispose()


# --------------------------------------------------------------------------------------------
# Reading the database (sqlite3 for SQLite, asyncpg for PostgreSQL)


_STORE_TABLE = re.compile(r"\b(FROM|JOIN) messages\b")
MESSAGE_STORE = "transcare-messages.db"  # on SQLite the listener's file, beside transcare.db


class Probe:
    """Counts and timings read straight from the service's database. On SQLite the message
    store is a file of its own, attached as ``store``: queries name ``messages`` as on
    PostgreSQL and read the attached table."""

    def __init__(self, sqlite_path: Path | None, pg_dsn: str | None) -> None:
        self.sqlite_path = sqlite_path
        self.pg_dsn = pg_dsn
        self._pg: Any = None
        self._sq: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> Probe:
        if self.pg_dsn:
            import asyncpg

            self._pg = await asyncpg.connect(self.pg_dsn)
        else:
            assert self.sqlite_path is not None
            self._sq = sqlite3.connect(self.sqlite_path, check_same_thread=False, timeout=30)
            self._sq.execute("ATTACH DATABASE ? AS store",
                             (str(self.sqlite_path.with_name(MESSAGE_STORE)),))
        return self

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._sq is not None:
            self._sq.close()

    async def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run ``sql`` written with ``?`` placeholders (turned into $n for PostgreSQL)."""
        async with self._lock:  # one statement at a time on the one connection
            if self._pg is not None:
                n = iter(range(1, 1000))
                pg_sql = re.sub(r"\?", lambda _: f"${next(n)}", sql)
                return [tuple(r) for r in await self._pg.fetch(pg_sql, *args)]
            assert self._sq is not None
            conn = self._sq
            sql = _STORE_TABLE.sub(r"\1 store.messages", sql)
            return await asyncio.to_thread(lambda: conn.execute(sql, args).fetchall())

    async def one(self, sql: str, *args: Any) -> tuple[Any, ...]:
        return (await self.rows(sql, *args))[0]

    async def backend_pids(self) -> list[int]:
        """PostgreSQL: the server processes serving the run's database (the listener's and
        the worker's pools), to read their CPU use; [] for SQLite."""
        if self._pg is None:
            return []
        async with self._lock:
            rows = await self._pg.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()")
        return [int(r[0]) for r in rows]

    async def max_message_id(self) -> int:
        return int((await self.one("SELECT coalesce(max(id), 0) FROM messages"))[0])

    async def stored_and_processed(self, lo: int) -> tuple[int, int]:
        """Messages after ``lo`` stored (not rejected) and processed by transitions: the
        sampler's once-a-second reading while the senders run. Only what it needs: the full
        :meth:`progress` counts the outbox by topic, a read of the whole table that cost the
        server 15-20 ms a call on PostgreSQL, CPU taken from the run it measures."""
        r = await self.one(
            "SELECT (SELECT count(*) FROM messages WHERE id > ? AND status <> 'rejected'),"
            " (SELECT count(*) FROM processed_events WHERE message_id > ?)", lo, lo)
        return int(r[0]), int(r[1])

    async def progress(self, lo: int, hi: int) -> dict[str, int]:
        """Messages in (lo, hi]: stored (not rejected), dead-lettered, processed by
        transitions; unpublished outbox rows (all)."""
        r = await self.one(
            "SELECT (SELECT count(*) FROM messages WHERE id > ? AND id <= ? "
            "        AND status <> 'rejected'),"
            " (SELECT count(*) FROM messages WHERE id > ? AND id <= ? "
            "        AND status = 'deadlettered'),"
            " (SELECT count(*) FROM processed_events WHERE message_id > ? AND message_id <= ?),"
            " (SELECT count(*) FROM outbox WHERE published_at IS NULL),"
            " (SELECT count(*) FROM messages WHERE id > ? AND id <= ? AND status = 'accepted'),"
            " (SELECT count(*) FROM outbox WHERE topic = ?),"
            " (SELECT count(*) FROM planned_events)",
            lo, hi, lo, hi, lo, hi, lo, hi, EPISODES_TOPIC)
        return {"stored": int(r[0]), "deadlettered": int(r[1]), "processed": int(r[2]),
                "outbox_unpublished": int(r[3]), "not_normalised": int(r[4]),
                "episode_events": int(r[5]), "planned": int(r[6])}

    def _seconds(self, later: str, earlier: str) -> str:
        if self._pg is not None:
            return f"EXTRACT(EPOCH FROM ({later} - {earlier}))::float8"
        return f"(julianday({later}) - julianday({earlier})) * 86400.0"

    async def lags(self, lo: int, hi: int) -> list[float]:
        """received_at -> processed_at, seconds, for messages in (lo, hi]."""
        rows = await self.rows(
            f"SELECT {self._seconds('p.processed_at', 'm.received_at')} FROM messages m "
            "JOIN processed_events p ON p.message_id = m.id WHERE m.id > ? AND m.id <= ?",
            lo, hi)
        return [float(r[0]) for r in rows]

    async def stages(self, lo: int, hi: int) -> dict[str, list[float]]:
        """The lag split by the timestamps the service keeps, seconds, for (lo, hi]:
        relay (received -> published to adt.raw), normaliser (published -> outcome recorded,
        which it does after publishing the event to adt.events) and transitions (outcome
        recorded -> processed_events row; negative when transitions ran first)."""
        rows = await self.rows(
            f"SELECT {self._seconds('m.published_at', 'm.received_at')},"
            f" {self._seconds('m.processed_at', 'm.published_at')},"
            f" {self._seconds('p.processed_at', 'm.processed_at')} FROM messages m "
            "JOIN processed_events p ON p.message_id = m.id WHERE m.id > ? AND m.id <= ? "
            "AND m.published_at IS NOT NULL AND m.processed_at IS NOT NULL", lo, hi)
        names = ("relay: received -> published", "normaliser: published -> recorded",
                 "transitions: recorded -> processed")
        out = {n: [float(r[i]) for r in rows] for i, n in enumerate(names)}
        # Messages that made episode events: transitions -> the last of their events planned.
        rows = await self.rows(
            f"SELECT {self._seconds('max(pl.processed_at)', 'p.processed_at')} "
            "FROM planned_events pl JOIN processed_events p "
            f"ON p.event_id = {self._before_hash('pl.event_id')} "
            "WHERE p.message_id > ? AND p.message_id <= ? GROUP BY p.event_id, p.processed_at",
            lo, hi)
        out["follow-up: processed -> tasks planned"] = [float(r[0]) for r in rows]
        return out

    def _before_hash(self, column: str) -> str:
        """The ADT event id an episode event id (``{adt event id}#{n}``) comes from."""
        if self._pg is not None:
            return f"split_part({column}, '#', 1)"
        return f"substr({column}, 1, instr({column}, '#') - 1)"

    async def task_lags(self, lo: int, hi: int) -> list[float]:
        """MLLP in -> tasks committed: received_at -> the last planned_events row of the
        message's episode events, for messages in (lo, hi] that made episode events."""
        rows = await self.rows(
            f"SELECT {self._seconds('max(pl.processed_at)', 'm.received_at')} "
            "FROM planned_events pl JOIN processed_events p "
            f"ON p.event_id = {self._before_hash('pl.event_id')} "
            "JOIN messages m ON m.id = p.message_id "
            "WHERE m.id > ? AND m.id <= ? GROUP BY m.id, m.received_at", lo, hi)
        return [float(r[0]) for r in rows]

    async def followup(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["tasks"] = {f"{t}/{st}": int(n) for t, st, n in await self.rows(
            "SELECT type, status, count(*) FROM tasks GROUP BY 1, 2 ORDER BY 1, 2")}
        out["task_history"] = {a: int(n) for a, n in await self.rows(
            "SELECT action, count(*) FROM task_history GROUP BY 1 ORDER BY 1")}
        out["notifications"] = {f"{c}/{st}": int(n) for c, st, n in await self.rows(
            "SELECT channel, status, count(*) FROM notifications GROUP BY 1, 2 ORDER BY 1, 2")}
        out["planned_events"] = await self.count("planned_events")
        out["episode_events"] = await self.count("outbox", f"topic = '{EPISODES_TOPIC}'")
        out["outbox_by_topic"] = {t: int(n) for t, n in await self.rows(
            "SELECT topic, count(*) FROM outbox GROUP BY 1 ORDER BY 1")}
        return out

    async def batches(self, lo: int, hi: int) -> dict[str, dict[str, float]]:
        """Batch sizes the worker used, from the timestamps it writes once per batch:
        ``processed_events.processed_at`` (transitions) and ``messages.processed_at``
        (normaliser outcomes)."""
        out = {}
        for name, sql in (
                ("transitions", "SELECT count(*) FROM processed_events WHERE message_id > ? "
                                "AND message_id <= ? GROUP BY processed_at"),
                ("normaliser", "SELECT count(*) FROM messages WHERE id > ? AND id <= ? AND "
                               "processed_at IS NOT NULL GROUP BY processed_at")):
            sizes = [int(r[0]) for r in await self.rows(sql, lo, hi)]
            out[name] = {"batches": len(sizes),
                         "mean": round(sum(sizes) / len(sizes), 1) if sizes else 0,
                         "p50": percentile(sizes, 50), "max": max(sizes, default=0)}
        return out

    async def last_commit(self, lo: int, hi: int) -> dt.datetime | None:
        """The latest processed_at of (lo, hi] and the latest outbox published_at."""
        r = await self.one(
            "SELECT (SELECT max(processed_at) FROM processed_events "
            "        WHERE message_id > ? AND message_id <= ?),"
            " (SELECT max(published_at) FROM outbox)", lo, hi)
        times = [_aware(v) for v in r if v is not None]
        return max(times) if times else None

    async def outcomes(self, lo: int, hi: int) -> dict[str, int]:
        rows = await self.rows(
            "SELECT outcome, CASE WHEN member_id IS NULL THEN 'unknown' ELSE 'enrolled' END, "
            "count(*) FROM processed_events WHERE message_id > ? AND message_id <= ? "
            "GROUP BY 1, 2", lo, hi)
        return {f"{who}:{outcome}": int(n) for outcome, who, n in rows}

    async def episodes(self) -> list[tuple[Any, ...]]:
        return await self.rows(
            "SELECT e.id, e.member_id, e.kind, e.status, e.coordinator_id, e.coordinator_reason,"
            " e.admitted_at, e.discharged_at, e.disposition, e.location,"
            " (SELECT count(*) FROM episode_visits v WHERE v.episode_id = e.id) "
            "FROM episodes e ORDER BY e.member_id, e.admitted_at")

    async def visit_numbers(self) -> dict[str, str]:
        return {v: e for v, e in await self.rows(
            "SELECT visit_number, episode_id FROM episode_visits")}

    async def flags(self) -> dict[str, int]:
        return {f: int(n) for f, n in await self.rows(
            "SELECT flag, count(*) FROM episode_flags GROUP BY flag")}

    async def count(self, table: str, where: str = "1=1") -> int:
        return int((await self.one(f"SELECT count(*) FROM {table} WHERE {where}"))[0])


def _aware(value: Any) -> dt.datetime:
    moment: dt.datetime = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


# --------------------------------------------------------------------------------------------
# Processes


class Worker:
    """``transcare worker`` as a child process, logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path,
                 profile_to: Path | None = None) -> None:
        self.env = env
        self.log_path = log_path
        self.profile_to = profile_to
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    def start(self) -> None:
        command = [*transcare_command(), "worker"]
        if self.profile_to is not None:
            command = [sys.executable, "-m", "bench.e2e", PROFILED_WORKER, str(self.profile_to)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=ROOT)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        self.exit_code = stop_process(self.proc, timeout=20.0)
        return self.exit_code


def service_env(data_dir: Path, bootstrap: str, database_url: str, run_id: str,
                gather_ms: float | None = None) -> dict[str, str]:
    """Like tests/conftest.py service_env: short consumer-group timeouts, own group."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSCARE_")}
    env.update({
        "TRANSCARE_DATA_DIR": str(data_dir),
        "TRANSCARE_KAFKA_BOOTSTRAP": bootstrap,
        "TRANSCARE_BROKER_EMBEDDED": "true",
        "TRANSCARE_KAFKA_REBALANCE_TIMEOUT": "2",
        "TRANSCARE_KAFKA_SESSION_TIMEOUT": "6",
        "TRANSCARE_LOG_LEVEL": "WARNING",
        "TRANSCARE_CONSUMER_GROUP": f"transcare-e2e-{run_id}",
    })
    if database_url:
        env["TRANSCARE_DATABASE_URL"] = database_url
    return env | gather_env(gather_ms)


_LOG_PROBLEM = re.compile(r"error|warning|traceback|exception|critical", re.IGNORECASE)


def log_problems(path: Path) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if _LOG_PROBLEM.search(line)]


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used (/proc/stat, all cores)."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds of the service's processes, of this process (the senders), of the
    database server's backends serving the run (PostgreSQL) and of everything else on the
    machine, between start and stop, as % of one core."""

    def __init__(self, pids: dict[str, int], db_pids: list[int] | None = None) -> None:
        self.pids = dict(pids)
        for n, pid in enumerate(db_pids or []):
            self.pids[f"postgres backend {n}"] = pid
        self.started = 0.0
        self.elapsed = 0.0
        self._t0: dict[str, float] = {}
        self.pct: dict[str, float] = {}

    def start(self) -> CpuMeter:
        self.started = time.monotonic()
        self._t0 = {name: read_cpu_seconds(pid) or 0.0 for name, pid in self.pids.items()}
        self._t0["bench (senders)"] = time.process_time()
        self._t0["machine"] = machine_busy_seconds()
        return self

    def stop(self) -> dict[str, float]:
        self.elapsed = max(1e-9, time.monotonic() - self.started)
        used: dict[str, float] = {}
        for name, pid in self.pids.items():
            now = read_cpu_seconds(pid)
            used[name] = max(0.0, (now or 0.0) - self._t0[name]) if now is not None else 0.0
        backends = sum(v for k, v in used.items() if k.startswith("postgres backend"))
        used = {k: v for k, v in used.items() if not k.startswith("postgres backend")}
        if any(k.startswith("postgres backend") for k in self.pids):
            used["postgres (run's backends)"] = backends
        used["bench (senders)"] = time.process_time() - self._t0["bench (senders)"]
        machine = machine_busy_seconds() - self._t0["machine"]
        used["other processes"] = max(0.0, machine - sum(used.values()))
        self.pct = {k: 100.0 * v / self.elapsed for k, v in used.items()}
        self.pct["machine total"] = 100.0 * machine / self.elapsed
        return self.pct


# --------------------------------------------------------------------------------------------
# Phases


@dataclass
class PhaseResult:
    name: str
    load: LoadResult | None = None
    lo: int = 0
    hi: int = 0
    first_send: float = 0.0  # wall clock (time.time())
    sent_s: float = 0.0  # first send -> last ACK
    done_s: float | None = None  # first send -> everything committed (poll observed)
    db_done_s: float | None = None  # first send -> latest processed_at / published_at
    drained: bool = False
    progress: dict[str, int] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)
    task_lags: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)
    batches: dict[str, dict[str, float]] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    # CPU milliseconds a message, by process (which process a change moved)
    cpu_ms: dict[str, float] = field(default_factory=dict)
    timeline: list[tuple[float, int, int]] = field(default_factory=list)
    expected_enrolled: int = 0
    messages: int = 0

    @property
    def rate(self) -> float:
        return self.messages / self.done_s if self.done_s else 0.0

    def lag(self, pct: float) -> float:
        return percentile(self.lags, pct)

    def summary(self) -> dict[str, Any]:
        load = self.load.summary() if self.load else None
        if load:
            load.pop("errors", None)
        return {
            "messages": self.messages, "enrolled_messages": self.expected_enrolled,
            "message_ids": [self.lo + 1, self.hi], "sent_s": round(self.sent_s, 3),
            "ingest_rate_msg_s": round(self.messages / self.sent_s, 1) if self.sent_s else None,
            "done_s": round(self.done_s, 3) if self.done_s else None,
            "db_done_s": round(self.db_done_s, 3) if self.db_done_s else None,
            "end_to_end_msg_s": round(self.rate, 1), "drained": self.drained,
            "lag_s": {"p50": round(self.lag(50), 4), "p90": round(self.lag(90), 4),
                      "p99": round(self.lag(99), 4), "max": round(self.lag(100), 4),
                      "count": len(self.lags)},
            "lag_to_tasks_s": {"p50": round(percentile(self.task_lags, 50), 4),
                               "p99": round(percentile(self.task_lags, 99), 4),
                               "max": round(percentile(self.task_lags, 100), 4),
                               "count": len(self.task_lags)},
            "lag_stages_s": {k: {"p50": round(percentile(v, 50), 4),
                                 "p99": round(percentile(v, 99), 4),
                                 "max": round(percentile(v, 100), 4)}
                             for k, v in self.stages.items()},
            "worker_batches": self.batches,
            "outcomes": self.outcomes, "progress": self.progress,
            "cpu_pct": {k: round(v, 1) for k, v in self.cpu.items()},
            "cpu_ms_per_message": {k: round(v, 4) for k, v in self.cpu_ms.items()},
            "load": load,
            "timeline": [[round(t, 2), s, p] for t, s, p in self.timeline],
        }


@dataclass
class Report:
    options: Options
    echo1: LoadResult | None = None
    echo8: LoadResult | None = None
    warmup: PhaseResult | None = None
    throughput: PhaseResult | None = None
    paced: PhaseResult | None = None
    sanity: dict[str, Any] = field(default_factory=dict)
    processes: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    worker_profile: dict[str, Any] = field(default_factory=dict)
    feed: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    database: str = "sqlite"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def phase_echo(opts: Options, report: Report) -> None:
    say("phase 1: MLLP echo baseline")
    with EchoServer() as echo:
        gen = AdtGenerator("ECHO")
        report.echo1 = asyncio.run(run_load(
            HOST, echo.port, connections=1, total=opts.echo_messages // 2,
            next_message=gen.message, max_seconds=opts.max_phase_seconds))
        say(f"  1 connection : {report.echo1.rate:,.0f} msg/s")
        report.echo8 = asyncio.run(run_load(
            HOST, echo.port, connections=SENDERS, total=opts.echo_messages,
            next_message=gen.message, max_seconds=opts.max_phase_seconds))
        say(f"  8 connections: {report.echo8.rate:,.0f} msg/s")


async def run_phase(name: str, feed: Feed, port: int, probe: Probe, opts: Options,
                    report: Report, pids: dict[str, int], rate: float | None = None,
                    load_seconds: float | None = None) -> PhaseResult:
    """Send ``feed``, then wait (bounded) until every accepted message is processed by
    transitions and the outbox is empty; measure the lag of the phase's messages."""
    res = PhaseResult(name, messages=feed.total, expected_enrolled=feed.enrolled_messages)
    res.lo = await probe.max_message_id()
    cpu = CpuMeter(pids, await probe.backend_pids()).start()
    stop = asyncio.Event()

    async def sample() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            stored, processed = await probe.stored_and_processed(res.lo)
            res.timeline.append((time.monotonic() - t0, stored, processed))
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass

    sampler = asyncio.create_task(sample())
    res.first_send = time.time()
    started = time.monotonic()
    try:
        res.load = await run_load(
            HOST, port, connections=SENDERS, total=feed.total, message_for=feed.message_for,
            rate=rate, max_seconds=load_seconds or opts.max_phase_seconds)
        res.sent_s = time.monotonic() - started
        feed.mark_unsent()
        res.messages = sum(1 for c in feed.connections for m in c if m.sent)
        res.expected_enrolled = feed.enrolled_messages
        check_replies(name, res.load, report, paced=rate is not None)
        res.hi = await probe.max_message_id()
        deadline = time.monotonic() + opts.max_phase_seconds
        while True:
            p = await probe.progress(res.lo, res.hi)
            if p["processed"] + p["deadlettered"] >= p["stored"] and \
                    p["planned"] >= p["episode_events"] and not p["outbox_unpublished"]:
                res.done_s = time.monotonic() - started
                res.drained = True
                break
            if time.monotonic() > deadline or not all_alive(report):
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await sampler
    res.cpu = cpu.stop()
    if res.messages:
        res.cpu_ms = {k: 10.0 * v * cpu.elapsed / res.messages for k, v in res.cpu.items()}
    res.progress = await probe.progress(res.lo, res.hi)
    if not res.drained:
        report.problems.append(
            f"{name}: not fully processed within {opts.max_phase_seconds:g} s after the last "
            f"ACK: {res.progress}")
        res.done_s = None
    last = await probe.last_commit(res.lo, res.hi)
    if last is not None:
        res.db_done_s = last.timestamp() - res.first_send
    res.lags = await probe.lags(res.lo, res.hi)
    res.stages = await probe.stages(res.lo, res.hi)
    res.task_lags = await probe.task_lags(res.lo, res.hi)
    res.batches = await probe.batches(res.lo, res.hi)
    res.outcomes = await probe.outcomes(res.lo, res.hi)
    if res.progress["deadlettered"]:
        report.problems.append(f"{name}: {res.progress['deadlettered']} messages dead-lettered")
    return res


def all_alive(report: Report) -> bool:
    procs = report.processes.get("_objects", {})
    return all(p.alive() for p in procs.values())


def check_replies(phase: str, result: LoadResult, report: Report, paced: bool = False) -> None:
    not_aa = result.sent - result.codes.get("AA", 0)
    if not_aa:
        report.problems.append(f"{phase}: {not_aa} replies were not AA: {dict(result.codes)}")
    if result.errors:
        report.problems.append(f"{phase}: {len(result.errors)} sender errors, first: "
                               f"{result.errors[0]}")
    if result.stopped_by_deadline and not paced:
        report.problems.append(f"{phase}: stopped by the time limit after {result.sent} "
                               "messages")


def say_phase(res: PhaseResult) -> None:
    if res.load is None:
        return
    done = f"{res.done_s:.1f} s" if res.done_s else "NOT DRAINED"
    say(f"  sent {res.load.sent:,} in {res.sent_s:.1f} s ({res.load.rate:,.0f} msg/s ACKed), "
        f"all committed after {done} -> {res.rate:,.0f} msg/s end to end; lag p50 "
        f"{res.lag(50):.3f} s p99 {res.lag(99):.3f} s max {res.lag(100):.3f} s; to tasks p50 "
        f"{percentile(res.task_lags, 50):.3f} s p99 {percentile(res.task_lags, 99):.3f} s")
    say("  CPU (% of one core): " + cpu_text(res.cpu))
    say("  worker batch sizes: " + "; ".join(
        f"{k} {v['batches']} batches, mean {v['mean']}, max {v['max']}"
        for k, v in res.batches.items()))
    say("  lag by stage p50/p99: " + "; ".join(
        f"{k} {percentile(v, 50):.3f}/{percentile(v, 99):.3f} s" for k, v in res.stages.items()))


async def sanity(probe: Probe, feeds: list[Feed], phases: list[PhaseResult],
                 report: Report) -> dict[str, Any]:
    """Outcomes and episodes against what the generator sent."""
    out: dict[str, Any] = {}
    expected: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    visits_sent: dict[str, str] = {}  # visit number -> member id (enrolled)
    for feed in feeds:
        for v in feed.visits:
            mid = v.patient.member_id
            if mid is None:
                continue
            e = v.expected()
            if e is not None:
                expected[mid][e] += 1
                for m in v.messages:
                    if m.sent:
                        visits_sent[m.visit_number] = mid
    rows = await probe.episodes()
    actual: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    by_kind: Counter[str] = Counter()
    for r in rows:
        actual[r[1]][(r[2], r[3])] += 1
        by_kind[f"{r[2]}/{r[3]}"] += 1
    exp_kind: Counter[str] = Counter()
    for c in expected.values():
        for (k, s), n in c.items():
            exp_kind[f"{k}/{s}"] += n
    wrong = sorted(m for m in set(expected) | set(actual) if expected[m] != actual[m])
    out["episodes"] = len(rows)
    out["episodes_expected"] = sum(exp_kind.values())
    out["by_kind_status"] = dict(sorted(by_kind.items()))
    out["by_kind_status_expected"] = dict(sorted(exp_kind.items()))
    out["members_with_episodes"] = len(actual)
    out["members_mismatched"] = len(wrong)
    out["mismatch_examples"] = [
        {"member": m, "expected": {f"{k}/{s}": n for (k, s), n in expected[m].items()},
         "actual": {f"{k}/{s}": n for (k, s), n in actual[m].items()}} for m in wrong[:10]]
    if wrong:
        report.problems.append(f"episodes differ from the feed for {len(wrong)} members, e.g. "
                               f"{out['mismatch_examples'][:2]}")
    # One episode per visit: every visit number sent for an enrolled patient is indexed, and to
    # an episode of that member; no member has two episodes admitted at the same moment.
    index = await probe.visit_numbers()
    owner = {r[0]: r[1] for r in rows}
    missing = [v for v in visits_sent if v not in index]
    foreign = [v for v, mid in visits_sent.items() if v in index and owner.get(index[v]) != mid]
    twins = Counter((r[1], str(r[6])) for r in rows if r[6] is not None)
    dups = [k for k, n in twins.items() if n > 1]
    out["visit_numbers_sent"] = len(visits_sent)
    out["visit_numbers_unindexed"] = len(missing)
    out["visit_numbers_wrong_member"] = len(foreign)
    out["duplicate_episodes"] = len(dups)
    if missing or foreign or dups:
        report.problems.append(f"visits: {len(missing)} visit numbers without an episode, "
                               f"{len(foreign)} on another member's episode, {len(dups)} "
                               "duplicated episodes")
    out["flags"] = await probe.flags()
    out["match_reviews"] = await probe.count("match_reviews")
    out["failed_events"] = await probe.count("processed_events", "outcome = 'failed'")
    # Outcomes: enrolled messages matched (applied / duplicate / ignored), unknown unmatched.
    outcomes: Counter[str] = Counter()
    for ph in phases:
        outcomes.update(ph.outcomes)
    out["outcomes"] = dict(sorted(outcomes.items()))
    enrolled_rows = sum(n for k, n in outcomes.items() if k.startswith("enrolled:"))
    enrolled_expected = sum(ph.expected_enrolled for ph in phases)
    bad = {k: n for k, n in outcomes.items()
           if k not in ("unknown:unmatched", "enrolled:applied", "enrolled:duplicate",
                        "enrolled:ignored")}
    out["enrolled_events"] = enrolled_rows
    out["enrolled_events_expected"] = enrolled_expected
    if bad or enrolled_rows != enrolled_expected:
        report.problems.append(f"outcomes: {bad or 'as expected'}; enrolled events "
                               f"{enrolled_rows} (expected {enrolled_expected})")
    if out["failed_events"] or out["match_reviews"]:
        report.problems.append(f"{out['failed_events']} failed events, {out['match_reviews']} "
                               "match reviews")
    out["followup"] = f = await probe.followup()
    if f["planned_events"] != f["episode_events"]:
        report.problems.append(f"follow-up planned {f['planned_events']} of "
                               f"{f['episode_events']} episode events")
    out["sample"] = [
        {"episode": r[0], "member": r[1], "kind": r[2], "status": r[3], "coordinator": r[4],
         "why": r[5], "admitted": str(r[6]), "discharged": str(r[7]), "disposition": r[8],
         "location": r[9], "visit_numbers": r[10]} for r in rows[:12]]
    return out


async def phase_service(opts: Options, report: Report, port: int, probe: Probe,
                        feeds: dict[str, Feed], pids: dict[str, int]) -> None:
    say(f"warm-up: {feeds['warmup'].total} messages, waiting for the worker to join and "
        "process them")
    report.warmup = await run_phase("warm-up", feeds["warmup"], port, probe, opts, report, pids)
    say_phase(report.warmup)
    if not report.warmup.drained:
        return
    say(f"phase 3/4: throughput, {SENDERS} senders, {feeds['throughput'].total:,} messages")
    report.throughput = await run_phase("throughput", feeds["throughput"], port, probe, opts,
                                        report, pids)
    say_phase(report.throughput)
    await asyncio.sleep(1.0)
    say(f"phase 5: processing lag at {opts.rate:,.0f} msg/s for {opts.seconds:g} s")
    report.paced = await run_phase(
        "fixed rate", feeds["paced"], port, probe, opts, report, pids, rate=opts.rate,
        load_seconds=min(opts.max_phase_seconds, opts.seconds * 1.5 + 5))
    say_phase(report.paced)
    say("phase 6: sanity")
    report.sanity = await sanity(probe, list(feeds.values()),
                                 [p for p in (report.warmup, report.throughput, report.paced)
                                  if p], report)
    s = report.sanity
    say(f"  {s['episodes']:,} episodes (expected {s['episodes_expected']:,}): "
        f"{s['by_kind_status']}; {s['members_mismatched']} members differ, "
        f"{s['duplicate_episodes']} duplicates; flags {s['flags']}")
    f = s["followup"]
    say(f"  follow-up: {f['planned_events']:,} of {f['episode_events']:,} episode events "
        f"planned; tasks {f['tasks']}; history {f['task_history']}; notifications "
        f"{f['notifications']}")


# --------------------------------------------------------------------------------------------
# In-process profile of the worker's code


def profile_worker(opts: Options, report: Report, database_url: str, sqlite_path: Path | None,
                   scratch: Path, hi: int) -> None:
    """Run what the worker runs for each batch (normalise, the outcome check and record, the
    event's JSON out and back, transitions in one transaction) in this process, on one thread,
    under cProfile, over messages 1..hi of the run. Kafka and faust are not in it.

    SQLite: on a copy of the run's database; PostgreSQL: on the run's own database (dropped
    afterwards). Episodes, processed events, outbox, reviews are emptied and the messages set
    back to accepted first, so the same work is done again."""
    say(f"profile: the worker's code in-process over {hi:,} messages, batches of "
        f"{opts.profile_batch}")
    from adt_listener.relay import envelope
    from adt_listener.store import PendingMessage, SqlAlchemyMessageStore
    from transcare.db.database import ThreadedSqliteDatabase, open_database
    from transcare.followup_agent import decode as decode_episode_events
    from transcare.followup_agent import followup_context, plan
    from transcare.settings import Settings
    from transcare.transitions_agent import decode, handle, transitions_config
    from transcare.worker import _record, _undecided

    url = database_url
    if sqlite_path is not None:
        copy = scratch / "profile.db"
        src, dst = sqlite3.connect(sqlite_path), sqlite3.connect(copy)
        src.backup(dst)
        src.close()
        # The stored messages come from the message store's own file: one database here.
        dst.execute("ATTACH DATABASE ? AS store", (str(sqlite_path.with_name(MESSAGE_STORE)),))
        dst.execute("INSERT INTO main.messages SELECT * FROM store.messages")
        dst.commit()
        dst.execute("DETACH DATABASE store")
        dst.close()
        url = f"sqlite:///{copy}"

    class InlineSqlite(ThreadedSqliteDatabase):
        """Every transaction on the calling thread, so cProfile sees it."""

        async def run(self, fn: Any) -> Any:
            return self._transaction(fn, False)

        async def write(self, fn: Any) -> Any:
            return self._transaction(fn, True)

        async def run_dbapi(self, fn: Any) -> Any:
            return self._dbapi_transaction(fn)

    settings = Settings()
    config = transitions_config(settings)
    fctx = followup_context(settings)
    tz = ZoneInfo(settings.default_time_zone)
    stages: dict[str, float] = defaultdict(float)

    async def go() -> tuple[cProfile.Profile, float]:
        """Pass 1 times the stages (no profiler), pass 2 runs the same under cProfile."""
        from sqlalchemy import text

        import transitions.processor as processor
        from adt_listener.normaliser import normalise

        db: Any = InlineSqlite(url) if sqlite_path is not None else open_database(url)

        def reset(conn: Any) -> list[Any]:
            for table in ("processed_events", "episodes", "episode_visits", "episode_flags",
                          "episode_timeline", "outbox", "match_reviews", "leases", "tasks",
                          "task_history", "planned_events", "notifications"):
                conn.execute(text(f"DELETE FROM {table}"))
            conn.execute(text("UPDATE members SET raised_tier = NULL"))
            conn.execute(text("UPDATE messages SET status = 'accepted', processed_at = NULL, "
                              "reason = NULL WHERE status <> 'rejected'"))
            return list(conn.execute(text(
                "SELECT id, received_at, sending_facility, control_id, message_type, "
                "patient_key, charset, raw FROM messages WHERE id <= :hi AND "
                "status <> 'rejected' ORDER BY id"), {"hi": hi}))

        # Inside process_batch (pass 1 only): time its parts by wrapping the module's names.
        inner = {"match": "transitions: matching (match)",
                 "_candidates": "transitions: candidate members (load)",
                 "member_ids_by_identifier": "transitions: identifier lookup",
                 "_apply": "transitions: episode machine + state + outbox (enrolled)",
                 "_record": "transitions: processed_events rows",
                 "_record_all": "transitions: processed_events rows",
                 "load_staff": "transitions: staff + caseload load",
                 "open_caseload": "transitions: staff + caseload load"}
        # The processor's private names change as it is optimised: wrap the ones it has.
        inner = {k: v for k, v in inner.items() if hasattr(processor, k)}
        originals = {name: getattr(processor, name) for name in inner}

        def timed(name: str) -> Any:
            fn = originals[name]

            def wrapper(*a: Any, **k: Any) -> Any:
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    stages[inner[name]] += time.perf_counter() - t
            return wrapper

        async def one_pass(prof: cProfile.Profile | None) -> float:
            rows = await db.write(reset)
            records = []
            for r in rows:
                pending = PendingMessage._make((r[0], _aware(r[1]), *r[2:]))
                records.append((f"msg-{r[0]}".encode(), envelope(pending)))
            store = SqlAlchemyMessageStore(db)
            seen = [0]  # outbox rows read so far

            def new_episode_events(conn: Any) -> list[bytes]:
                got = list(conn.execute(text(
                    "SELECT id, topic, payload FROM outbox WHERE id > :seen ORDER BY id"),
                    {"seen": seen[0]}))
                if got:
                    seen[0] = int(got[-1][0])
                return [str(r[2]).encode() for r in got if r[1] == EPISODES_TOPIC]

            started = time.perf_counter()
            bench_reads = 0.0  # reading the outbox stands in for Kafka: not counted
            if prof is not None:
                prof.enable()
            for at in range(0, len(records), opts.profile_batch):
                batch = records[at:at + opts.profile_batch]
                t = time.perf_counter()
                results = [normalise(k, v, lambda _: tz) for k, v in batch]
                t1 = time.perf_counter()
                results = await _undecided(store, results)
                t2 = time.perf_counter()
                values = [r.value for r in results if r.doc is not None]
                t3 = time.perf_counter()
                await _record(store, results)
                t4 = time.perf_counter()
                events = decode(values)
                t5 = time.perf_counter()
                await handle(db, events, config)
                t6 = time.perf_counter()
                if prof is not None:
                    prof.disable()
                values = await db.run(new_episode_events)  # the planner reads them from Kafka
                if prof is not None:
                    prof.enable()
                t7 = time.perf_counter()
                bench_reads += t7 - t6
                episode_events = decode_episode_events(values)
                t8 = time.perf_counter()
                await plan(db, episode_events, fctx)
                t9 = time.perf_counter()
                if prof is None:
                    stages["follow-up: episode event from JSON"] += t8 - t7
                    stages["follow-up: plan_batch transaction"] += t9 - t8
                    stages["normalise (parse + map + validate)"] += t1 - t
                    stages["normaliser: outcome check (decided)"] += t2 - t1
                    stages["normaliser: event to JSON"] += t3 - t2
                    stages["normaliser: record outcomes (UPDATE messages)"] += t4 - t3
                    stages["transitions: event from JSON"] += t5 - t4
                    stages["transitions: process_batch transaction (all)"] += t6 - t5
            if prof is not None:
                prof.disable()
            return time.perf_counter() - started - bench_reads

        for name in inner:
            setattr(processor, name, timed(name))
        try:
            elapsed = await one_pass(None)
        finally:
            for name, fn in originals.items():
                setattr(processor, name, fn)
        prof = cProfile.Profile()
        await one_pass(prof)
        await db.dispose()
        return prof, elapsed

    from transcare.tuning import tune_process

    tune_process()  # as the worker process does
    prof, elapsed = asyncio.run(go())
    stream = io.StringIO()
    stats = pstats.Stats(prof, stream=stream)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(30)
    text_out = stream.getvalue()
    (scratch / "profile.txt").write_text(text_out)
    n = hi
    report.profile = {
        "messages": n, "batch": opts.profile_batch, "seconds": round(elapsed, 2),
        "msg_s_one_core": round(n / elapsed, 1) if elapsed else None,
        "note": "stages timed without the profiler (functions inside process_batch wrapped); "
                "top_* from a second pass under cProfile",
        "ms_per_message": round(1000 * elapsed / n, 3) if n else None,
        "stages_ms_per_message": {k: round(1000 * v / n, 4) for k, v in stages.items()},
        "top_cumulative": _top(stats, "cumulative", 30),
        "top_tottime": _top(stats, "tottime", 25),
    }
    say(f"  {n / elapsed:,.0f} msg/s on one core ({1000 * elapsed / n:.2f} ms per message); "
        "per stage (ms/msg): " + ", ".join(
            f"{k} {1000 * v / n:.3f}" for k, v in sorted(stages.items(), key=lambda kv: -kv[1])))


PROFILED_WORKER = "profiled-worker"


def profiled_worker(out: str) -> int:
    """``python -m bench.e2e profiled-worker OUT``: ``transcare worker`` with every thread
    (the event loop and the database thread) under its own cProfile profiler timed by that
    thread's CPU clock, so waiting costs nothing; the merged stats go to OUT on exit."""
    import threading

    from transcare.cli import main as cli

    profilers: list[cProfile.Profile] = []

    def start_in_thread(*_: Any) -> None:
        sys.setprofile(None)
        prof = cProfile.Profile(time.thread_time)
        profilers.append(prof)
        prof.enable()

    threading.setprofile(start_in_thread)
    main_prof = cProfile.Profile(time.thread_time)
    profilers.append(main_prof)
    main_prof.enable()
    code = 0
    try:
        code = cli(["worker"])
    except SystemExit as exc:
        code = int(exc.code or 0) if isinstance(exc.code, int | None) else 1
    finally:
        main_prof.disable()
        stats = pstats.Stats(main_prof)
        for prof in profilers[1:]:
            try:
                stats.add(prof)
            except (TypeError, ValueError):  # a thread that never ran Python code
                pass
        stats.dump_stats(out)
    return code


# Where a function's own CPU time goes, by where its code lives.
_AREAS = (
    ("faust", "faust + mode (stream framework)"), ("mode/", "faust + mode (stream framework)"),
    ("aiokafka", "aiokafka (Kafka client)"), ("kafka/", "aiokafka (Kafka client)"),
    ("sqlalchemy", "SQLAlchemy"), ("pydantic", "pydantic"), ("orjson", "orjson"),
    ("structlog", "logging"), ("logging", "logging"),
    ("adt_listener/", "normaliser (adt_listener)"), ("transitions/", "transitions"),
    ("followup/", "follow-up"), ("transcare/", "transcare glue, outbox, metrics"),
    ("schemas/", "schemas"), ("prometheus", "metrics (prometheus_client)"),
    ("asyncio", "event loop (asyncio, uvloop)"), ("uvloop", "event loop (asyncio, uvloop)"),
    ("concurrent/futures", "thread pool"), ("threading", "thread pool"),
    ("rapidfuzz", "transitions"), ("zoneinfo", "datetime"), ("_strptime", "datetime"),
)


# The thread pool's idle wait for its next job: it shows CPU time under the thread clock on this
# VM although the thread is blocked, so it is reported apart and left out of the shares.
IDLE_AREA = "thread pool idle wait (left out)"


def _area(filename: str, func: str) -> str:
    if filename == "~":  # a builtin: name it by what it is
        if "SimpleQueue" in func and "get" in func:
            return IDLE_AREA
        if "sqlite3" in func:
            return "sqlite3 (C driver)"
        if "pydantic_core" in func:
            return "pydantic"
        if "orjson" in func:
            return "orjson"
        if "uvloop" in func or "select" in func or "epoll" in func or "socket" in func:
            return "event loop (asyncio, uvloop)"
        return "builtins (str, dict, re, ...)"
    for marker, area in _AREAS:
        if marker in filename:
            return area
    return "other"


def summarise_worker_profile(path: Path) -> dict[str, Any]:
    """CPU seconds by area and the top functions of a profiled worker run."""
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    areas: dict[str, float] = defaultdict(float)
    total = 0.0
    for (filename, _line, func), (_cc, _nc, tt, _ct, _) in entries.items():
        area = _area(filename, func)
        areas[area] += tt
        total += tt if area != IDLE_AREA else 0.0
    ours = [r for r in _top(stats, "cumulative", 400)
            if r["function"].split(":", 1)[0].split("/", 1)[0] in
            ("adt_listener", "transitions", "followup", "transcare", "schemas")]
    return {
        "file": str(path), "cpu_s": round(total, 2),
        "by_area": {k: {"cpu_s": round(v, 2),
                        "share": round(v / total, 3) if total and k != IDLE_AREA else 0}
                    for k, v in sorted(areas.items(), key=lambda kv: -kv[1])},
        "top_tottime": [r for r in _top(stats, "tottime", 26)
                        if "SimpleQueue' objects>" not in r["function"]][:25],
        "top_cumulative_own_code": ours[:30],
    }


def _top(stats: pstats.Stats, key: str, n: int) -> list[dict[str, Any]]:
    """The top ``n`` functions by ``key`` as JSON rows (file:line(function), calls, seconds)."""
    entries = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _) in entries.items():
        rows.append({"function": f"{_short(filename)}:{line}({func})", "calls": nc,
                     "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3)})
    rows.sort(key=lambda r: r["cumtime_s" if key == "cumulative" else "tottime_s"], reverse=True)
    return rows[:n]


def _short(filename: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# --------------------------------------------------------------------------------------------
# Output


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table_rows(report: Report) -> list[list[str]]:
    o, rows = report.options, []
    e1, e8, t, p = report.echo1, report.echo8, report.throughput, report.paced
    echo = e8.rate if e8 else 0.0

    def ratio(rate: float) -> str:
        return f"{rate / echo:.3f} x echo-8" if echo else ""

    if e1 and e8:
        rows.append(["echo baseline, 1 connection", "", f"{e1.rate:,.0f} msg/s", "", ""])
        rows.append(["echo baseline, 8 connections", "", f"{e8.rate:,.0f} msg/s", "1 x", ""])
    if t and t.load:
        pct = 100.0 * t.expected_enrolled / t.messages if t.messages else 0.0
        rows.append([f"end to end, {SENDERS} senders, {t.messages:,} msgs ({pct:.0f}% enrolled)",
                     f">= {TARGET_RATE:,.0f} msg/s",
                     f"{t.rate:,.0f} msg/s" if t.done_s else "not drained",
                     ratio(t.rate), _mark(t.rate >= TARGET_RATE)])
        rows.append(["  first send -> last ACK (listener ingest)", "",
                     f"{t.sent_s:.1f} s ({t.load.rate:,.0f} msg/s, ACK p99 "
                     f"{t.load.percentile_ms(99):.1f} ms)", ratio(t.load.rate), ""])
        rows.append(["  first send -> all committed (DB stamps / polled)", "",
                     f"{t.db_done_s or 0:.1f} s / {t.done_s or 0:.1f} s", "", ""])
        rows.append(["  processing lag p50 / p99 / max", "",
                     f"{t.lag(50):.2f} / {t.lag(99):.2f} / {t.lag(100):.2f} s", "", ""])
        rows.append(["  MLLP in -> tasks committed p50 / p99 / max", "",
                     f"{percentile(t.task_lags, 50):.2f} / {percentile(t.task_lags, 99):.2f} / "
                     f"{percentile(t.task_lags, 100):.2f} s", "", ""])
        rows.append(["  CPU during phase (% of one core)", "", cpu_text(t.cpu), "", ""])
        rows.append(["  CPU per message (ms)", "", cpu_ms_text(t.cpu_ms), "", ""])
    if p and p.load:
        ok = p.done_s is not None and p.lag(99) <= TARGET_LAG_P99_S
        rows.append([f"processing lag at {o.rate:,.0f} msg/s, {o.seconds:g} s (achieved "
                     f"{p.load.rate:,.0f}/s)", f"p99 <= {TARGET_LAG_P99_S:g} s",
                     f"p50 {p.lag(50):.3f} s, p99 {p.lag(99):.3f} s", "", _mark(ok)])
        rows.append(["  MLLP in -> tasks committed p50 / p99", "",
                     f"{percentile(p.task_lags, 50):.3f} / {percentile(p.task_lags, 99):.3f} s",
                     "", ""])
        for k, v in p.stages.items():
            rows.append([f"    {k} p50 / p99", "",
                         f"{percentile(v, 50):.3f} / {percentile(v, 99):.3f} s", "", ""])
        rows.append(["  max lag / drained after last send", "",
                     f"{p.lag(100):.3f} s / {max(0.0, (p.done_s or 0) - p.sent_s):.1f} s",
                     "", ""])
        rows.append(["  CPU during phase (% of one core)", "", cpu_text(p.cpu), "", ""])
    s = report.sanity
    if s:
        rows.append(["episodes (expected from the feed)", "exact",
                     f"{s['episodes']:,} ({s['episodes_expected']:,})", "",
                     _mark(s["episodes"] == s["episodes_expected"]
                           and not s["members_mismatched"])])
        rows.append(["  by kind/status", "",
                     ", ".join(f"{k} {v:,}" for k, v in s["by_kind_status"].items()), "", ""])
        rows.append(["  duplicated / visit numbers without episode", "0 / 0",
                     f"{s['duplicate_episodes']} / {s['visit_numbers_unindexed']}", "",
                     _mark(not s["duplicate_episodes"] and not s["visit_numbers_unindexed"])])
        f = s["followup"]
        tasks = Counter[str]()
        for k, n in f["tasks"].items():
            tasks[k.split("/")[1]] += n
        rows.append(["tasks (episode events planned)", "all planned",
                     f"{sum(tasks.values()):,}: " + ", ".join(f"{k} {v:,}" for k, v in
                                                                tasks.items())
                     + f" ({f['planned_events']:,} / {f['episode_events']:,})", "",
                     _mark(f["planned_events"] == f["episode_events"])])
        enrolled_ok = s["enrolled_events"] == s["enrolled_events_expected"]
        rows.append(["  enrolled events matched / unknown unmatched", "all",
                     f"{s['enrolled_events']:,} ({s['enrolled_events_expected']:,}) / "
                     f"{s['outcomes'].get('unknown:unmatched', 0):,}", "", _mark(enrolled_ok)])
    procs = report.processes
    if procs.get("exit_codes"):
        codes = procs["exit_codes"]
        warn = procs.get("log_problem_lines", {})
        rows.append(["processes: exit codes, problem log lines", "0, none",
                     ", ".join(f"{k} {v} ({len(warn.get(k, []))})" for k, v in codes.items()),
                     "", _mark(all(v == 0 for v in codes.values())
                               and not any(warn.values()))])
    return rows


_CPU_SHORT = {"bench (senders)": "senders", "postgres (run's backends)": "postgres",
              "other processes": "other"}


def cpu_text(cpu: dict[str, float]) -> str:
    parts = [f"{_CPU_SHORT.get(k, k)} {v:.0f}" for k, v in cpu.items() if k != "machine total"]
    return ", ".join(parts) + f" (machine {cpu.get('machine total', 0):.0f} of " \
        f"{100 * (os.cpu_count() or 1)})"


def cpu_ms_text(cpu_ms: dict[str, float]) -> str:
    parts = [f"{_CPU_SHORT.get(k, k)} {v:.3f}" for k, v in cpu_ms.items() if k != "machine total"]
    return ", ".join(parts) + f" (machine {cpu_ms.get('machine total', 0):.3f})"


def busy_machine_notes(report: Report) -> list[str]:
    """Phases during which other processes used more than a quarter of a core."""
    notes = []
    for ph in (report.throughput, report.paced):
        if ph and ph.cpu.get("other processes", 0) > 25:
            notes.append(f"{ph.name}: other processes used {ph.cpu['other processes']:.0f}% "
                         "of one core meanwhile: the machine was shared, figures are low")
    return notes


def git_revision() -> str:
    """The commit measured, with ``+dirty`` when the tree has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty.strip() else "")


def to_json(report: Report) -> dict[str, Any]:
    def res(r: LoadResult | None) -> dict[str, Any] | None:
        return r.summary() if r else None

    e8 = report.echo8
    t = report.throughput
    procs = {k: v for k, v in report.processes.items() if not k.startswith("_")}
    return {
        "benchmark": "e2e",
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "code": git_revision(),
        "options": {k: v for k, v in vars(report.options).items() if k != "database_url"}
        | {"database_url": re.sub(r"//[^@/]*@", "//***@", report.options.database_url)},
        "database": report.database,
        "echo_1": res(report.echo1), "echo_8": res(report.echo8),
        "feed": report.feed,
        "warmup": report.warmup.summary() if report.warmup else None,
        "throughput": t.summary() if t else None,
        "throughput_vs_echo8": round(t.rate / e8.rate, 4) if t and e8 and e8.rate else None,
        "fixed_rate": report.paced.summary() if report.paced else None,
        "sanity": report.sanity, "processes": procs, "profile": report.profile,
        "worker_profile": report.worker_profile,
        "problems": report.problems, "notes": busy_machine_notes(report),
        "targets": {"end_to_end_msg_s": TARGET_RATE, "lag_p99_s_at_500": TARGET_LAG_P99_S},
    }


# --------------------------------------------------------------------------------------------
# Main


async def _create_pg_database(server: str) -> tuple[str, str, str]:
    """A fresh database on the server: (its URL, the admin DSN, its name)."""
    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"transcare_e2e_{uuid.uuid4().hex[:10]}"
    admin = make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return make_url(server).set(database=name).render_as_string(hide_password=False), admin, name


async def _drop_pg_database(admin: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def build_feeds(opts: Options, run_id: str) -> tuple[FeedGenerator, dict[str, Feed]]:
    now = dt.datetime.now(ZoneInfo("America/New_York")).replace(tzinfo=None, microsecond=0)
    gen = FeedGenerator(run_id, opts.seed, now)
    feeds = {"warmup": gen.feed(WARMUP_MESSAGES), "throughput": gen.feed(opts.messages),
             "paced": gen.feed(max(SENDERS, int(opts.rate * opts.seconds)))}
    return gen, feeds


def run(opts: Options) -> Report:
    from sqlalchemy.engine import make_url

    from transcare.broker import EmbeddedBroker
    from transcare.broker import free_port as broker_port

    report = Report(opts, database="postgresql" if opts.database_url else "sqlite")
    run_id = dt.datetime.now(dt.UTC).strftime("%H%M%S")
    gen, feeds = build_feeds(opts, run_id)
    members = roster(gen.members, opts.members, random.Random(opts.seed + 1))
    tp = feeds["throughput"]
    report.feed = {
        "members": len(members), "enrolled_patients": len(gen.members),
        "messages": {k: f.total for k, f in feeds.items()},
        "enrolled_messages": {k: f.enrolled_messages for k, f in feeds.items()},
        "visit_scenarios_throughput": dict(tp.scenarios()),
        "triggers_throughput": dict(Counter(m.trigger + "/" + m.patient_class
                                            for c in tp.connections for m in c)),
        "bytes_per_message_mean": round(sum(len(m.body) for c in tp.connections for m in c)
                                        / max(1, tp.total)),
    }
    say(f"feed: {report.feed['messages']} messages, enrolled "
        f"{report.feed['enrolled_messages']}, roster {len(members):,} members; visits "
        f"{report.feed['visit_scenarios_throughput']}")
    phase_echo(opts, report)

    work = Path(tempfile.mkdtemp(prefix="transcare-e2e-"))
    data_dir = work / "data"
    data_dir.mkdir()
    broker = EmbeddedBroker(broker_port(), work / "broker.log")
    procs: dict[str, Any] = {}
    report.processes["_objects"] = procs
    pg: tuple[str, str] | None = None
    database_url = ""
    sqlite_path: Path | None = None
    probe_hi = 0
    try:
        if opts.database_url:
            database_url, admin, name = asyncio.run(_create_pg_database(opts.database_url))
            pg = (admin, name)
            say(f"created PostgreSQL database {name}")
            pg_dsn: str | None = make_url(database_url).set(drivername="postgresql") \
                .render_as_string(hide_password=False)
        else:
            sqlite_path = data_dir / "transcare.db"
            pg_dsn = None
        say("starting the embedded broker, migrating, loading the roster")
        broker.start()
        env = service_env(data_dir, broker.bootstrap, database_url, run_id,
                          opts.listener_gather_ms)
        db_upgrade(env)
        asyncio.run(enrol(database_url or f"sqlite:///{sqlite_path}", members))
        if opts.split:
            procs["normaliser"] = Worker({**env, "TRANSCARE_WORKER_STAGES": "normaliser"},
                                         work / "normaliser.log")
            procs["normaliser"].start()
        for n in range(opts.workers):
            name = "worker" if n == 0 else f"worker{n + 1}"
            stages = {"TRANSCARE_WORKER_STAGES": "transitions,followup"} if opts.split else {}
            procs[name] = Worker({**env, **stages}, work / f"{name}.log",
                                 work / f"{name}.prof" if opts.profile_worker else None)
            procs[name].start()
        procs["listener"] = Listener(env, work / "listener.log")
        procs["listener"].start()
        pids = {name: p.pid for name, p in procs.items()}
        if broker.pid:
            pids["broker"] = broker.pid
        install_uvloop()

        async def measure() -> None:
            probe = await Probe(sqlite_path, pg_dsn).open()
            try:
                await phase_service(opts, report, procs["listener"].port, probe, feeds, pids)
            finally:
                await probe.close()

        try:
            asyncio.run(measure())
        except Exception as exc:
            report.problems.append(f"run aborted: {type(exc).__name__}: {exc}")
        for name, p in procs.items():
            if not p.alive():
                report.problems.append(f"{name} died during the run")
        probe_hi = report.throughput.hi if report.throughput else 0
    finally:
        codes = {}
        for name, p in reversed(list(procs.items())):  # listener first, then the workers
            codes[name] = p.stop()
        report.processes["exit_codes"] = codes
        report.processes["log_problem_lines"] = {
            name: log_problems(p.log_path)[:20] for name, p in procs.items()}
        report.processes["logs"] = {name: str(p.log_path) for name, p in procs.items()}
        for name, code in codes.items():
            if code != 0:
                report.problems.append(f"{name} exit code {code}")
        for name, lines in report.processes["log_problem_lines"].items():
            if lines:
                report.problems.append(f"{name} log: {len(lines)} error/warning lines, first: "
                                       f"{lines[0][:300]}")
        broker.stop()
        for name, proc in procs.items():
            prof_path = getattr(proc, "profile_to", None)
            if prof_path is not None:
                if prof_path.exists():
                    report.worker_profile[name] = summarise_worker_profile(prof_path)
                else:
                    report.problems.append(f"{name}: no profile written to {prof_path}")
        try:
            if opts.profile and probe_hi:
                try:
                    profile_worker(opts, report, database_url, sqlite_path, work, probe_hi)
                except Exception as exc:
                    report.problems.append(f"profile failed: {type(exc).__name__}: {exc}")
        finally:
            if pg is not None and opts.keep:
                say(f"kept PostgreSQL database {pg[1]}")
            elif pg is not None:
                asyncio.run(_drop_pg_database(*pg))
                say(f"dropped PostgreSQL database {pg[1]}")
            if not opts.keep and not report.problems:
                shutil.rmtree(work, ignore_errors=True)
            else:
                say(f"kept {work} (logs and data)")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [PROFILED_WORKER]:
        return profiled_worker(args[1])
    opts = parse_args(args)
    install_uvloop()
    started = time.monotonic()
    report = run(opts)
    results = RESULTS_PG if opts.database_url else RESULTS
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(to_json(report), indent=2, default=str) + "\n")
    db = "PostgreSQL" if opts.database_url else "SQLite"
    print(f"\ntranscare end-to-end benchmark ({db}, {os.cpu_count()} CPUs, "
          f"{time.monotonic() - started:.0f} s, code {git_revision()})\n")
    print_table(["figure", "target", "measured", "ratio", "verdict"], table_rows(report))
    if report.sanity.get("sample"):
        print("\nepisodes (first 12):")
        print_table(["member", "kind", "status", "coordinator (why)", "admitted", "discharged",
                     "disp", "location", "visits"],
                    [[e["member"], e["kind"], e["status"], f"{e['coordinator']} ({e['why']})",
                      e["admitted"][:16], e["discharged"][:16], e["disposition"],
                      e["location"], str(e["visit_numbers"])] for e in report.sanity["sample"]])
    prof = report.profile
    if prof:
        print(f"\nin-process profile of the worker's code: {prof['msg_s_one_core']:,} msg/s on "
              f"one core, {prof['ms_per_message']} ms/message (no Kafka, no faust; without the "
              "profiler)")
        st = prof["stages_ms_per_message"]
        top = [k for k in st if not k.startswith("transitions: ") or k.endswith("(all)")
               or k.endswith("from JSON")]
        top.sort(key=lambda k: k.startswith("follow-up"))
        inner = sorted((k for k in st if k not in top), key=lambda k: -st[k])
        rows = []
        for k in top:
            rows.append([k, f"{st[k]:.3f}"])
            if k.endswith("(all)"):
                rows += [[f"  of which {i.removeprefix('transitions: ')}", f"{st[i]:.3f}"]
                         for i in inner]
        print_table(["stage (per message of the phase)", "ms"], rows)
    for name, wp in report.worker_profile.items():
        print(f"\n{name} under cProfile (CPU time of every thread): {wp['cpu_s']} s")
        print_table(["area (own time of its functions)", "CPU s", "share"],
                    [[k, f"{v['cpu_s']:.1f}", f"{100 * v['share']:.0f}%"]
                     for k, v in wp["by_area"].items() if v["share"] >= 0.005])
        print_table(["top functions (own time)", "calls", "own CPU s", "cumulative s"],
                    [[r["function"][:90], f"{r['calls']:,}", f"{r['tottime_s']:.2f}",
                      f"{r['cumtime_s']:.2f}"] for r in wp["top_tottime"][:15]])
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    for note in busy_machine_notes(report):
        print(f"NOTE: {note}")
    print(f"\nwritten to {results.relative_to(ROOT)}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
