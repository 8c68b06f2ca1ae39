"""From one MLLP frame to the stored message(s) and the ACK frame(s) to send back.

The responder is the listener's application service: judge each message
(:func:`adt_listener.inspection.inspect`), apply the facility policy, build the ACK, commit
message and ACK together through the writer, and only then hand the ACK back to the connection.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Callable, Hashable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from adt_listener.hl7.ack import AckError, EchoHeader, ErrorLocation, build_ack
from adt_listener.hl7.batch import is_batch, split_batch
from adt_listener.hl7.framing import Frame, FrameTooLarge
from adt_listener.inspection import Verdict, inspect, refused
from adt_listener.store import ACCEPTED, REJECTED, IncomingMessage, StoreResult
from adt_listener.writer import StoreWriter
from transcare import metrics
from transcare.settings import FacilitySettings

log = structlog.get_logger("adt_listener")
ACK_SEPARATOR = "\x1c"  # between the frames of one stored exchange (commit + application ACK)
_COMMIT = {"AA": "CA", "AE": "CE", "AR": "CR"}


class Responder:
    """Answers frames.

    Arguments:
        writer: the group-commit store writer.
        facilities: per-facility policy (allowed source addresses), keyed by MSH-4.
        require_known_facility: reject MSH-4 values not in ``facilities``.
        clock: returns the current UTC time (injected for tests).
    """

    def __init__(self, writer: StoreWriter, facilities: Mapping[str, FacilitySettings],
                 require_known_facility: bool = False,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._writer = writer
        self._facilities = facilities
        self._require_known = require_known_facility
        self._clock = clock
        self._ids = itertools.count(1)
        self._prefix = f"{int(time.time()):x}"
        self._counters: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    @staticmethod
    def needs_async(event: Frame | FrameTooLarge) -> bool:
        """Whether a frame takes :meth:`respond` (oversize, batch) rather than
        :meth:`respond_nowait`."""
        return isinstance(event, FrameTooLarge) or is_batch(event.payload)

    async def respond(self, event: Frame | FrameTooLarge, peer: str,
                      source: Hashable | None = None) -> list[bytes]:
        """The reply frames' payloads, once every message of the frame is committed.
        ``source`` names the connection (see :class:`StoreWriter`'s gathering)."""
        if isinstance(event, FrameTooLarge):
            return [await self._oversize(event, peer, source)]
        if is_batch(event.payload):
            return [await self._batch(event.payload, peer, source)]
        verdict = self._policy(inspect(event.payload), peer)
        frames = await self._store(event.payload, verdict, peer, source)
        return [f.encode(verdict.codec, "replace") for f in frames]

    def respond_nowait(self, payload: bytes, peer: str,
                       reply: Callable[[list[bytes] | BaseException], None],
                       source: Hashable | None = None) -> None:
        """The hot path for a single message: judge it now, and once it is committed call
        ``reply`` with the ACK frames (or the store's error: then no ACK may be sent).
        ``source`` names the connection (see :class:`StoreWriter`'s gathering)."""
        verdict = self._policy(inspect(payload), peer)
        item = self._item(payload, verdict, peer)

        def done(result: StoreResult | BaseException) -> None:
            if isinstance(result, BaseException):
                reply(result)
                return
            self._count(verdict, result.duplicate)
            reply([f.encode(verdict.codec, "replace")
                   for f in result.ack.split(ACK_SEPARATOR)])

        self._writer.submit_nowait(item, done, source)

    async def _store(self, raw: bytes, verdict: Verdict, peer: str,
                     source: Hashable | None = None) -> list[str]:
        result = await self._writer.submit(self._item(raw, verdict, peer), source)
        self._count(verdict, result.duplicate)
        return result.ack.split(ACK_SEPARATOR)

    def _item(self, raw: bytes, verdict: Verdict, peer: str) -> IncomingMessage:
        now = self._clock()
        frames = self._acks(verdict, now)
        status = REJECTED if verdict.code == "AR" or verdict.code == "AE" else ACCEPTED
        return IncomingMessage(
            received_at=now, sending_facility=verdict.sending_facility,
            control_id=verdict.control_id or None, message_type=verdict.message_type,
            patient_key=verdict.patient_key, peer=peer, charset=verdict.codec, raw=raw,
            ack_code=verdict.code, ack=ACK_SEPARATOR.join(frames), status=status,
            reason=_reason(verdict.error),
        )

    def _acks(self, verdict: Verdict, now: datetime) -> list[str]:
        """Original mode: one ACK. Enhanced mode: commit ACK, then the application ACK."""
        header, error, code = verdict.header, verdict.error, verdict.code
        if not verdict.enhanced:
            return [build_ack(header, code, self._next_id(), now, error)]
        frames = []
        commit = _COMMIT[code]
        if _wanted(verdict.accept_ack or "AL", commit == "CA"):
            frames.append(build_ack(header, commit, self._next_id(), now, error))
        if _wanted(verdict.application_ack or "AL", code == "AA"):
            frames.append(build_ack(header, code, self._next_id(), now, error))
        if not frames:
            # MLLP is request/response: every frame gets an answer, even under NE/NE.
            frames.append(build_ack(header, commit, self._next_id(), now, error))
        return frames

    def _policy(self, verdict: Verdict, peer: str) -> Verdict:
        """Facility policy: known MSH-4 and allowed source addresses (TOML ``[facilities]``)."""
        if verdict.code == "AR" or not verdict.sending_facility:
            return verdict
        facility = self._facilities.get(verdict.sending_facility)
        if facility is None and self._require_known:
            return _rejected(verdict, f"MSH-4 sending facility {verdict.sending_facility} is not "
                             "configured on this listener")
        if facility and facility.allowed_sources and peer not in facility.allowed_sources:
            return _rejected(verdict, f"source address {peer} is not allowed to send for "
                             f"facility {verdict.sending_facility}")
        return verdict

    async def _batch(self, payload: bytes, peer: str, source: Hashable | None = None) -> bytes:
        batch = split_batch(payload)
        if batch.stray or not batch.messages:
            error = AckError(ErrorLocation("BHS"), 100, "batch contains no MSH message"
                             if not batch.messages else "segments before the first MSH")
            verdict = Verdict("AR", error, EchoHeader())
            rejected = await self._store(payload, verdict, peer, source)
            return "".join(rejected).encode("ascii", "replace")
        verdicts = [self._policy(inspect(raw), peer)._replace(accept_ack="", application_ack="")
                    for raw in batch.messages]
        # Submitted together (in order) so the whole batch shares group commits.
        acks = await asyncio.gather(*(self._store(raw, verdict, peer, source)
                                      for raw, verdict in zip(batch.messages, verdicts,
                                                              strict=True)))
        body = "".join(frame for frames in acks for frame in frames)
        sep, encoding = _batch_delimiters(batch.header)
        reply = f"BHS{sep}{encoding}\r{body}BTS{sep}{len(batch.messages)}\r"
        return reply.encode(verdicts[0].codec, "replace")

    async def _oversize(self, event: FrameTooLarge, peer: str,
                        source: Hashable | None = None) -> bytes:
        reason = f"message of {event.size_seen} bytes exceeds the listener's maximum size"
        verdict = refused(event.head, AckError(ErrorLocation("MSH"), 100, reason))
        log.warning("mllp.frame_too_large", peer=peer, bytes=event.size_seen)
        acks = await self._store(b"", verdict, peer, source)
        return acks[0].encode("latin-1", "replace")

    def _next_id(self) -> str:
        return f"{self._prefix}{next(self._ids):06d}"

    def _count(self, verdict: Verdict, duplicate: bool) -> None:
        labels = (*self._labels(verdict), verdict.code)
        counters = self._counters.get(labels)
        if counters is None:  # labelled children cached: labels() costs microseconds
            counters = (metrics.MESSAGES_RECEIVED.labels(labels[0], labels[1]),
                        metrics.ACKS_SENT.labels(labels[2]))
            self._counters[labels] = counters
        counters[0].inc()
        counters[1].inc()
        if duplicate:
            metrics.DUPLICATES.inc()
        if verdict.error is not None:
            metrics.REJECTS.labels(str(verdict.error.location), str(verdict.error.code)).inc()
            log.info("mllp.rejected", code=verdict.code, control_id=verdict.control_id,
                     facility=verdict.sending_facility, location=str(verdict.error.location),
                     reason=verdict.error.reason)


    def _labels(self, verdict: Verdict) -> tuple[str, str]:
        """Bounded metric labels: a facility only when configured or its ADT header was
        readable (AA/AE), a type only when it looks like one; never message text."""
        facility = verdict.sending_facility
        known = facility in self._facilities or verdict.code in ("AA", "AE")
        mtype = verdict.message_type
        return (facility if known and facility else "other",
                mtype if _TYPE_LABEL.match(mtype) else "other")


def _batch_delimiters(header: bytes) -> tuple[str, str]:
    """FHS/BHS-1 and -2 of the sender's batch header, to mirror in the batch reply."""
    text = header.decode("latin-1")
    if len(text) > 4:
        sep = text[3]
        encoding = text[4:].split(sep, 1)[0]
        if 4 <= len(encoding) <= 5:
            return sep, encoding
    return "|", "^~\\&"


_TYPE_LABEL = re.compile(r"^[A-Z0-9]{3}(\^[A-Z0-9]{2,3})?$")


def _wanted(condition: str, success: bool) -> bool:
    """HL7 table 0155: AL always, NE never, ER on error only, SU on success only."""
    return condition == "AL" or (condition == "ER" and not success) or (
        condition == "SU" and success)


def _rejected(verdict: Verdict, reason: str) -> Verdict:
    return verdict._replace(code="AR", error=AckError(ErrorLocation("MSH", 4), 204, reason))


def _reason(error: AckError | None) -> str | None:
    """The stored reason: names the location (``PID-3: ...``) once."""
    if error is None:
        return None
    where = str(error.location)
    return error.reason if error.reason.startswith(where) else f"{where}: {error.reason}"
