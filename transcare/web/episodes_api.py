"""``GET /api/episodes``, ``GET /api/episodes/{id}``, ``GET /api/match-reviews``,
``POST /api/match-reviews/{id}/resolve``, ``GET /api/members/{id}/identifiers``,
``POST /api/members/{id}/identifiers/forget``.

Episodes carry PHI (identifiers, clinical times): every view is written to the audit log
(``audit.phi_view``: the endpoint, the episode or member ids returned, never their content).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from followup.task_store import find_tasks
from transcare.db.database import Database
from transcare.web.tasks_api import task_out
from transitions.directory_store import identifiers_with_sources, load_members
from transitions.episode import Episode
from transitions.episode_queries import find_episodes, find_reviews, get_episode, member_identifiers, timeline
from transitions.processor import Config
from transitions.reviews import ReviewError, forget_identifier, resolve_review

audit = structlog.get_logger("audit")
Kind = Literal["ed", "inpatient", "observation", "post_acute"]
Status = Literal["open", "discharged", "closed", "cancelled"]
FlagName = Literal["readmission_30d", "frequent_ed", "stale", "left_ama", "expired"]


class PatientOut(BaseModel):
    program_id: str  # the roster member id
    identifiers: list[str]  # VALUE@AUTHORITY, every one the roster knows
    identifier_at_facility: str  # the PID-3 the facility sent


class CoordinatorOut(BaseModel):
    id: str | None
    reason: str | None  # roster | backup | caseload_balance | unassigned


class FlagOut(BaseModel):
    name: str
    raised_at: datetime
    detail: dict[str, Any]


class EpisodeOut(BaseModel):
    id: str
    patient: PatientOut
    kind: Kind
    status: Status
    facility: str
    sending_facility: str
    visit_numbers: list[str]
    location: str | None
    admitted_at: datetime | None
    discharged_at: datetime | None
    disposition: str | None  # PV1-36
    discharged_to: str | None
    coordinator: CoordinatorOut
    tier: str
    flags: list[str]
    paused: bool
    opted_out: bool
    close_reason: str | None
    lace: dict[str, Any] | None


class TimelineLine(BaseModel):
    at: datetime | None  # the clinical time
    type: str
    summary: str
    source_id: str
    detail: dict[str, Any]


class EpisodeDetailOut(EpisodeOut):
    flag_details: list[FlagOut]
    diagnoses: list[str]
    kind_history: list[str]
    timeline: list[TimelineLine]
    tasks: list[dict[str, Any]]  # its follow-up tasks, as in GET /api/tasks


class ReviewOut(BaseModel):
    id: int
    event_id: str
    message_id: int
    facility: str
    reason: str
    candidates: list[dict[str, Any]]  # member_id and score
    status: str
    created_at: datetime
    decided_member_id: str | None = None  # resolved: the member chosen (None: not enrolled)
    resolved_by: str | None = None
    resolved_at: datetime | None = None


class Resolve(BaseModel):
    by: str  # staff id of the reviewer
    member_id: str | None  # the member the event is about; null: not one of the program's


class ResolvedOut(BaseModel):
    review: ReviewOut
    outcome: str  # what applying the event did (applied, ignored, ...), or not_enrolled
    episode_events: int
    # other reviews of the same patient decided with this one (their events now the member's)
    also_decided: list[int]


class IdentifierOut(BaseModel):
    value: str
    authority: str
    source: str  # roster | merge (learned from an A40) | review (learned from a decision)


class Forget(BaseModel):
    by: str  # staff id of the person mending the decision
    value: str  # PID-3 CX-1
    authority: str  # CX-4 (as the member's identifiers list shows it)


class ForgottenOut(BaseModel):
    member_id: str
    forgotten: IdentifierOut
    identifiers: list[IdentifierOut]  # what the member holds now


def _review_out(row: dict[str, Any]) -> ReviewOut:
    return ReviewOut(**{k: v for k, v in row.items() if k in ReviewOut.model_fields})


def _out(e: Episode, ids: dict[str, list[str]]) -> dict[str, Any]:
    return dict(
        id=e.id, kind=e.kind, status=e.status, facility=e.facility, sending_facility=e.facility_key,
        patient=PatientOut(program_id=e.member_id, identifiers=ids.get(e.member_id, []),
                           identifier_at_facility=e.patient_identifier),
        visit_numbers=list(e.visit_numbers), location=e.location or None, admitted_at=e.admitted_at,
        discharged_at=e.discharged_at, disposition=e.disposition or None,
        discharged_to=e.discharged_to or None, tier=e.tier, flags=list(e.flag_names),
        coordinator=CoordinatorOut(id=e.coordinator_id or None, reason=e.coordinator_reason or None),
        paused=e.paused, opted_out=e.opted_out, close_reason=e.close_reason or None,
        lace=dict(e.lace) if e.lace else None)


def episodes_router(db: Database, config: Config) -> APIRouter:
    router = APIRouter(tags=["episodes"])

    @router.get("/api/episodes", response_model=list[EpisodeOut])
    async def list_episodes(
        request: Request, patient_id: str | None = None, status: Status | None = None,
        facility: str | None = None, flag: FlagName | None = None, kind: Kind | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[EpisodeOut]:
        """Episodes, newest admission first. ``patient_id`` is the program (roster) member id;
        ``facility`` matches PV1-3.4 or the sending facility (MSH-4)."""
        def read(conn: Connection) -> list[EpisodeOut]:
            found = find_episodes(conn, member_id=patient_id, status=status, facility=facility,
                                  flag=flag, kind=kind, limit=limit, offset=offset)
            ids = member_identifiers(conn, sorted({e.member_id for e in found}))
            return [EpisodeOut(**_out(e, ids)) for e in found]

        result = await db.run(read)
        audit.info("audit.phi_view", endpoint="/api/episodes", client=_client(request),
                   episode_ids=[e.id for e in result])
        return result

    @router.get("/api/episodes/{episode_id}", response_model=EpisodeDetailOut,
                responses={404: {"description": "no such episode"}})
    async def show_episode(episode_id: str, request: Request) -> EpisodeDetailOut:
        """One episode with its flags, diagnoses, timeline (clinical time order of recording)
        and its follow-up tasks."""
        now = datetime.now(UTC)

        def read(conn: Connection) -> EpisodeDetailOut | None:
            e = get_episode(conn, episode_id)
            if e is None:
                return None
            lines = [TimelineLine(at=r["occurred_at"], type=r["type"], summary=r["summary"],
                                  source_id=r["source_id"], detail=r["detail"] or {})
                     for r in timeline(conn, episode_id)]
            return EpisodeDetailOut(
                **_out(e, member_identifiers(conn, [e.member_id])), diagnoses=list(e.diagnoses),
                kind_history=list(e.kind_history), timeline=lines,
                tasks=[task_out(t, now) for t in find_tasks(conn, episode_id=episode_id, limit=1000)],
                flag_details=[FlagOut(name=f.name, raised_at=f.raised_at, detail=dict(f.detail))
                              for f in e.flags])

        found = await db.run(read)
        if found is None:
            raise HTTPException(404, f"no episode {episode_id}")
        audit.info("audit.phi_view", endpoint="/api/episodes/{id}", client=_client(request),
                   episode_ids=[found.id])
        return found

    @router.get("/api/match-reviews", response_model=list[ReviewOut], tags=["matching"])
    async def list_reviews(request: Request,
                           status: Literal["pending", "resolved"] | None = "pending",
                           limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[ReviewOut]:
        """ADT events whose patient could not be matched with confidence: the candidates with
        their scores (docs/matching.md). Nothing is guessed; an analyst decides."""
        result = [_review_out(r) for r in await db.run(lambda c: find_reviews(c, status, limit))]
        audit.info("audit.phi_view", endpoint="/api/match-reviews", client=_client(request),
                   review_ids=[r.id for r in result],
                   member_ids=sorted({str(c["member_id"]) for r in result for c in r.candidates}
                                     | {r.decided_member_id for r in result if r.decided_member_id}))
        return result

    @router.post("/api/match-reviews/{review_id}/resolve", response_model=ResolvedOut,
                 tags=["matching"], responses={404: {"description": "no such review"},
                                               409: {"description": "decided already, or the "
                                                     "member cannot take the event"},
                                               422: {"description": "unknown reviewer or member"}})
    async def resolve(review_id: int, body: Resolve, request: Request) -> ResolvedOut:
        """Decide a review: ``member_id`` gets the event held back (its episode, coordinator,
        flags and follow-up, as if matching had found them); null records that the patient is
        not one of the program's. ``by`` is the reviewer's staff id (docs/matching.md)."""
        try:
            decision = await db.write(lambda c: resolve_review(
                c, review_id, body.member_id, body.by, config, datetime.now(UTC)))
        except ReviewError as exc:
            raise HTTPException(exc.status, exc.reason) from None
        audit.info("audit.match_review_decided", client=_client(request), review_id=review_id,
                   member_id=body.member_id, by=body.by, outcome=decision.outcome,
                   also_decided=decision.also_decided)
        return ResolvedOut(review=_review_out(decision.review), outcome=decision.outcome,
                           episode_events=decision.episode_events,
                           also_decided=decision.also_decided)

    @router.get("/api/members/{member_id}/identifiers", response_model=list[IdentifierOut],
                tags=["matching"], responses={404: {"description": "no such member"}})
    async def list_identifiers(member_id: str, request: Request) -> list[IdentifierOut]:
        """Every identifier the member holds and where it came from: the roster, an A40 merge,
        or a match reviewer's decision (docs/matching.md)."""
        def read(conn: Connection) -> list[IdentifierOut] | None:
            if member_id not in load_members(conn, [member_id]):
                return None
            return _identifiers_out(conn, member_id)

        found = await db.run(read)
        if found is None:
            raise HTTPException(404, f"no member {member_id!r} in the roster")
        audit.info("audit.phi_view", endpoint="/api/members/{id}/identifiers",
                   client=_client(request), member_ids=[member_id])
        return found

    @router.post("/api/members/{member_id}/identifiers/forget", response_model=ForgottenOut,
                 tags=["matching"],
                 responses={404: {"description": "no such member, or not the member's"},
                            409: {"description": "a roster identifier: the roster decides it"},
                            422: {"description": "unknown person, or no value"}})
    async def forget(member_id: str, body: Forget, request: Request) -> ForgottenOut:
        """Mend a mistaken match decision: the member no longer holds an identifier it learned
        from a reviewer's decision (or a merge); the patient's next messages are matched
        without it. Events already applied stay the member's."""
        def write(conn: Connection) -> ForgottenOut:
            done = forget_identifier(conn, member_id, body.value, body.authority, body.by)
            gone = IdentifierOut(value=done.identifier.value,
                                 authority=done.identifier.authority, source=done.source)
            return ForgottenOut(member_id=member_id, forgotten=gone,
                                identifiers=_identifiers_out(conn, member_id))

        try:
            result = await db.write(write)
        except ReviewError as exc:
            raise HTTPException(exc.status, exc.reason) from None
        audit.info("audit.member_identifier_forgotten", client=_client(request),
                   member_id=member_id, authority=result.forgotten.authority,
                   source=result.forgotten.source, by=body.by)
        return result

    return router


def _identifiers_out(conn: Connection, member_id: str) -> list[IdentifierOut]:
    return [IdentifierOut(value=i.value, authority=i.authority, source=source)
            for i, source in identifiers_with_sources(conn, member_id)]


def _client(request: Request) -> str:
    return request.client.host if request.client else ""
