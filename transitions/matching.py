"""Patient matching: which roster member an ADT event is about (DOMAIN 6).

Identifier first (PID-3 value with its assigning authority, or the IN1 member id with the plan as
authority); otherwise a demographic score against candidates sharing the birth date, with a
threshold. Ambiguity goes to review, never to a guess. Pure: the caller passes the roster lookups.
Reasons carry counts and scores only, never names, dates or identifier values. See
``docs/matching.md`` for the weights and two worked examples.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from rapidfuzz.distance import JaroWinkler

from schemas.adt_event import AdtEvent, AdtEventView, Insurance, InsuranceView
from transitions.model import Member, MemberIdentifier

Outcome = Literal["matched", "unmatched", "review"]
Method = Literal["identifier", "demographics", "none"]

# Points out of 100 (docs/matching.md). Phone and zip are alternatives: the better one counts.
FAMILY_WEIGHT = 35.0
GIVEN_WEIGHT = 25.0
BIRTH_DATE_WEIGHT = 20.0
SEX_WEIGHT = 5.0
PHONE_WEIGHT = 15.0
ZIP_WEIGHT = 10.0
PARTIAL_NAME = 0.9  # every part of one name is in the other (MARY / MARY ANN)
INITIAL_MATCH = 0.7  # a given-name initial equal to the other side's first letter
SWAPPED_NAMES = 0.9  # family and given transposed
MAX_CANDIDATES = 5  # candidates reported with a review

_SUFFIXES = frozenset({"JR", "SR", "II", "III", "IV", "2ND", "3RD", "4TH"})
_LETTERS = str.maketrans({"Ø": "O", "Ł": "L", "Æ": "AE", "Œ": "OE", "Đ": "D", "Þ": "TH"})
_APOSTROPHES = re.compile(r"['’‘`´]")
_SEPARATORS = re.compile(r"[\W_]+")
_NOT_DIGIT = re.compile(r"[^0-9]")
_EXTENSION = re.compile(r"[xX#]")  # "555-1234 x12", "ext 12", "#12"
_SEXES = frozenset({"F", "M", "O"})  # PID-8, table 0001; anything else is U


def normalise_name(text: str | None) -> str:
    """A name as matching compares it: uppercase, accents stripped, apostrophes removed, other
    punctuation, hyphens and spaces collapsed to one space, generational suffixes (JR, SR, II,
    III, IV) dropped unless nothing else is left. Idempotent."""
    folded = unicodedata.normalize("NFKD", _APOSTROPHES.sub("", (text or "").upper()))
    folded = "".join(c for c in folded if not unicodedata.combining(c)).upper().translate(_LETTERS)
    tokens = _SEPARATORS.sub(" ", folded).split()
    kept = [t for t in tokens if t not in _SUFFIXES]
    return " ".join(kept or tokens)


def normalise_phone(text: str | None) -> str:
    """Digits only, the last 10 (so a leading US 1 is dropped); an extension after x/ext/# is
    ignored. '' when fewer than 7 digits remain."""
    digits = _NOT_DIGIT.sub("", _EXTENSION.split(text or "")[0])
    return digits[-10:] if len(digits) >= 7 else ""


def normalise_zip(text: str | None) -> str:
    """The first 5 digits (ZIP+4 loses its +4); '' when fewer than 5."""
    digits = _NOT_DIGIT.sub("", text or "")
    return digits[:5] if len(digits) >= 5 else ""


def normalise_sex(text: str | None) -> str:
    """PID-8 (table 0001) reduced to F, M, O or U (unknown, A, N and anything else)."""
    code = (text or "").strip().upper()[:1]
    return code if code in _SEXES else "U"


@dataclass(frozen=True)
class Demographics:
    """Normalised demographics of one person (event or roster side); build with :meth:`of`."""

    family: str
    given: str
    birth_date: dt.date | None
    sex: str
    phones: tuple[str, ...] = ()
    zip: str = ""

    @classmethod
    def of(cls, family: str | None, given: str | None, birth_date: dt.date | None,
           sex: str | None, phones: Iterable[str] = (), zip: str | None = None) -> Demographics:
        numbers = (normalise_phone(p) for p in phones)
        return cls(normalise_name(family), normalise_name(given), birth_date, normalise_sex(sex),
                   tuple(dict.fromkeys(n for n in numbers if n)), normalise_zip(zip))


def event_identifiers(event: AdtEvent | AdtEventView) -> tuple[MemberIdentifier, ...]:
    """Every identifier the event carries, normalised, deduplicated, in message order.

    PID-3 repetitions as CX-1 with CX-4 (else CX-6) as authority; then, for each IN1 with a
    member id (IN1-49, else IN1-36), one identifier per non-empty authority among IN1-2 plan id,
    IN1-3 company id and IN1-4 company name. An IN1 without any authority gives none."""
    found = list(patient_identifiers(event))
    for plan in event.insurance:
        found.extend(_insurance_identifiers(plan))
    return tuple(dict.fromkeys(i for i in found if i.value))


def patient_identifiers(event: AdtEvent | AdtEventView) -> tuple[MemberIdentifier, ...]:
    """PID-3 alone: each repetition's CX-1 with CX-4 (else CX-6) as authority, normalised (the
    patient's own numbers; an IN1 member id may be a subscriber's, shared by a family)."""
    return tuple(MemberIdentifier.of(cx.value, cx.assigning_authority or cx.assigning_facility or "")
                 for cx in event.patient.identifiers)


def _insurance_identifiers(plan: Insurance | InsuranceView) -> list[MemberIdentifier]:
    if not (plan.member_id or "").strip():
        return []
    authorities = (plan.plan_id, plan.company_id, plan.company_name)
    return [MemberIdentifier.of(plan.member_id, a) for a in authorities if (a or "").strip()]


def event_demographics(event: AdtEvent) -> Demographics | None:
    """PID-5 (family, given), PID-7, PID-8, PID-13 and PID-11 zip, normalised.

    None when the event has neither a name (PID-5) nor a birth date (PID-7). A name without a
    birth date gives Demographics with ``birth_date=None``, which matches nobody (blocking)."""
    patient = event.patient
    name = patient.name
    zip_code = patient.address.zip if patient.address else None
    demo = Demographics.of(name.family if name else None, name.given if name else None,
                           patient.birth_date, patient.sex, patient.phones, zip_code)
    return None if not (demo.family or demo.given or demo.birth_date) else demo


def member_demographics(member: Member) -> Demographics:
    """A roster row's demographics, normalised the same way as the event's."""
    return Demographics.of(member.family_name, member.given_name, member.birth_date, member.sex,
                           (member.phone,), member.zip)


def name_similarity(a: str, b: str) -> float:
    """0..1 similarity of two normalised names: Jaro-Winkler on the names without spaces, or
    :data:`PARTIAL_NAME` when every part of one is a part of the other. Symmetric."""
    if not a or not b:
        return 0.0
    full = JaroWinkler.normalized_similarity(a.replace(" ", ""), b.replace(" ", ""))
    parts_a, parts_b = set(a.split()), set(b.split())
    partial = PARTIAL_NAME if parts_a <= parts_b or parts_b <= parts_a else 0.0
    return max(full, partial)


def given_similarity(a: str, b: str) -> float:
    """Like :func:`name_similarity`, but an initial on either side ("J") scores
    :data:`INITIAL_MATCH` when it is the other's first letter and 0 otherwise."""
    if not a or not b:
        return 0.0
    if len(a.replace(" ", "")) == 1 or len(b.replace(" ", "")) == 1:
        return INITIAL_MATCH if a[0] == b[0] else 0.0
    return name_similarity(a, b)


def demographic_score(a: Demographics, b: Demographics) -> float:
    """0..100, symmetric, rounded to one decimal. Birth date blocks: 0 unless both sides have
    the same one. Names (straight or transposed), birth date, sex, then phone or zip."""
    if a.birth_date is None or a.birth_date != b.birth_date:
        return 0.0
    total = _name_points(a, b) + BIRTH_DATE_WEIGHT + _sex_points(a.sex, b.sex)
    return round(min(total + _contact_points(a, b), 100.0), 1)


def score(demo: Demographics, member: Member) -> float:
    """The event's demographics against one roster member (see :func:`demographic_score`)."""
    return demographic_score(demo, member_demographics(member))


def _name_points(a: Demographics, b: Demographics) -> float:
    straight = (FAMILY_WEIGHT * name_similarity(a.family, b.family)
                + GIVEN_WEIGHT * given_similarity(a.given, b.given))
    crossed = name_similarity(a.family, b.given) + name_similarity(a.given, b.family)
    swapped = SWAPPED_NAMES * (FAMILY_WEIGHT + GIVEN_WEIGHT) * crossed / 2
    return max(straight, swapped)


def _sex_points(a: str, b: str) -> float:
    if a == "U" or b == "U":
        return SEX_WEIGHT / 2
    return SEX_WEIGHT if a == b else 0.0


def _contact_points(a: Demographics, b: Demographics) -> float:
    if set(a.phones) & set(b.phones):
        return PHONE_WEIGHT
    return ZIP_WEIGHT if a.zip and a.zip == b.zip else 0.0


@dataclass(frozen=True)
class Candidate:
    member_id: str
    score: float


@dataclass(frozen=True)
class MatchResult:
    """The outcome. ``member_id`` is set only when matched. ``method`` says how the reported
    candidates were found ("none" when there are none); ``candidates`` are best first."""

    outcome: Outcome
    member_id: str | None
    method: Method
    score: float  # 100 for an identifier; the best demographic score otherwise (0 if none)
    candidates: tuple[Candidate, ...]
    reason: str  # short, counts and scores only: no PHI


@dataclass(frozen=True)
class MatchPolicy:
    """Demographic decision thresholds (points out of 100).

    Matched at ``threshold`` or above when no other candidate reaches the threshold or comes
    within ``margin``; review from ``review_floor``; unmatched below it.

    Raises:
        ValueError: unless 0 <= review_floor <= threshold <= 100 and margin >= 0.
    """

    threshold: float = 90.0
    review_floor: float = 75.0
    margin: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.review_floor <= self.threshold <= 100 or self.margin < 0:
            raise ValueError("match policy needs 0 <= review_floor <= threshold <= 100, margin >= 0")


DEFAULT_POLICY = MatchPolicy()


def match(identifiers: Iterable[MemberIdentifier], demographics: Demographics | None,
          by_identifier: Mapping[MemberIdentifier, str], members: Mapping[str, Member],
          on: dt.date, policy: MatchPolicy = DEFAULT_POLICY) -> MatchResult:
    """Find the roster member an event is about.

    Arguments:
        identifiers: the event's identifiers (:func:`event_identifiers`).
        demographics: the event's demographics (:func:`event_demographics`).
        by_identifier: roster index, normalised identifier to member id.
        members: member id to roster row: every member ``by_identifier`` may return, plus the
            demographic candidates (usually the members sharing the event's birth date; others
            score 0, so passing more is harmless).
        on: the event date; a matched member not enrolled that day is unmatched.
        policy: demographic thresholds.

    Returns:
        A :class:`MatchResult`; never raises on missing or odd data.
    """
    found = _by_identifier(identifiers, by_identifier)
    if found is None:
        found = _by_demographics(demographics, members, policy)
    return _require_enrolment(found, members, on)


def _by_identifier(identifiers: Iterable[MemberIdentifier],
                   by_identifier: Mapping[MemberIdentifier, str]) -> MatchResult | None:
    hits = list(dict.fromkeys(by_identifier[i] for i in identifiers if i in by_identifier))
    if not hits:
        return None
    candidates = tuple(Candidate(m, 100.0) for m in sorted(hits))
    if len(hits) == 1:
        return MatchResult("matched", hits[0], "identifier", 100.0, candidates, "identifier")
    reason = f"identifiers point to {len(hits)} members"
    return MatchResult("review", None, "identifier", 100.0, candidates, reason)


def _by_demographics(demographics: Demographics | None, members: Mapping[str, Member],
                     policy: MatchPolicy) -> MatchResult:
    if demographics is None:
        return _unmatched("no identifier hit and no demographics")
    if demographics.birth_date is None:
        return _unmatched("no identifier hit and no birth date")
    return decide(rank(demographics, members.values()), policy)


def rank(demographics: Demographics, members: Iterable[Member]) -> tuple[Candidate, ...]:
    """Members scoring above 0, best first (ties by member id)."""
    scored = (Candidate(m.member_id, score(demographics, m)) for m in members)
    return tuple(sorted((c for c in scored if c.score > 0), key=lambda c: (-c.score, c.member_id)))


def decide(ranked: tuple[Candidate, ...], policy: MatchPolicy = DEFAULT_POLICY) -> MatchResult:
    """The demographic decision over candidates ranked best first (see :class:`MatchPolicy`)."""
    if not ranked:
        return _unmatched("no candidate with the birth date")
    best = ranked[0]
    if best.score < policy.review_floor:
        return _unmatched(f"best score {_n(best.score)} below {_n(policy.review_floor)}", best.score)
    shown = tuple(c for c in ranked if c.score >= policy.review_floor)[:MAX_CANDIDATES]
    above = sum(c.score >= policy.threshold for c in ranked)
    if above >= 2:
        return _review(shown, f"{above} candidates above threshold")
    close = sum(best.score - c.score < policy.margin for c in shown)
    if close >= 2:
        return _review(shown, f"{close} candidates within {_n(policy.margin)} points")
    if best.score >= policy.threshold:
        reason = f"score {_n(best.score)}"
        return MatchResult("matched", best.member_id, "demographics", best.score, (best,), reason)
    return _review(shown, f"best score {_n(best.score)} below {_n(policy.threshold)}")


def _require_enrolment(found: MatchResult, members: Mapping[str, Member], on: dt.date) -> MatchResult:
    if found.outcome != "matched" or found.member_id is None:
        return found
    member = members.get(found.member_id)
    if member is None:
        return replace(found, outcome="unmatched", member_id=None, reason="member not in the roster")
    if member.enrolled_on(on):
        return found
    return replace(found, outcome="unmatched", member_id=None, reason="not enrolled on the event date")


def _unmatched(reason: str, best: float = 0.0) -> MatchResult:
    return MatchResult("unmatched", None, "none", best, (), reason)


def _review(shown: tuple[Candidate, ...], reason: str) -> MatchResult:
    return MatchResult("review", None, "demographics", shown[0].score, shown, reason)


def _n(points: float) -> str:
    return f"{points:.1f}".removesuffix(".0")
