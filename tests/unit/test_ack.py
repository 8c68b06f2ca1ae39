"""build_ack: mirrors the sender (delimiters, MSH-3..6 swapped, MSH-10, -12, -18) and reports
errors in ERR both ways (ERR-1 ELD before 2.5; ERR-2/3/4/8 from 2.5, table 0357)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hl7apy.parser import parse_message

from adt_listener.hl7.ack import AckError, EchoHeader, ErrorLocation, build_ack
from adt_listener.hl7.er7 import Delimiters, Message
from adt_listener.inspection import inspect

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
HEADER = EchoHeader(
    sending_application="HIS", sending_facility="WARD", receiving_application="TC",
    receiving_facility="HUB", trigger="A01", control_id="MSG0001", processing_id="P",
    version="2.5", character_set="UNICODE UTF-8",
)
MISSING_PID3 = AckError(ErrorLocation("PID", 3), 101, "PID-3 patient identifier is missing")
CUSTOM = Delimiters(field="#", component="!", repetition="@", escape="%", subcomponent="*")


def ack(header: EchoHeader = HEADER, code: str = "AA", error: AckError | None = None) -> Message:
    return Message(build_ack(header, code, "ACK0001", NOW, error))


def header(**kw: object) -> EchoHeader:
    return HEADER._replace(**kw)


# -- MSH and MSA mirror the sender --------------------------------------------------------------


@pytest.mark.parametrize(("segment", "field", "component", "expected"), [
    ("MSH", 3, 1, "TC"),      # MSH-3 sending application <- received MSH-5
    ("MSH", 4, 1, "HUB"),     # MSH-4 sending facility <- received MSH-6
    ("MSH", 5, 1, "HIS"),     # MSH-5 receiving application <- received MSH-3
    ("MSH", 6, 1, "WARD"),    # MSH-6 receiving facility <- received MSH-4
    ("MSH", 7, 1, "20240506070809+0000"),
    ("MSH", 9, 1, "ACK"),
    ("MSH", 9, 2, "A01"),     # MSG.2 trigger echoed
    ("MSH", 9, 3, "ACK"),     # MSG.3 structure
    ("MSH", 10, 1, "ACK0001"),
    ("MSH", 11, 1, "P"),
    ("MSH", 12, 1, "2.5"),
    ("MSH", 18, 1, "UNICODE UTF-8"),
    ("MSA", 1, 1, "AA"),
    ("MSA", 2, 1, "MSG0001"),  # MSA-2 echoes MSH-10
])
def test_ack_fields(segment: str, field: int, component: int, expected: str) -> None:
    assert ack().get(segment, field, component) == expected


def test_original_ack_has_no_err_and_no_msa3() -> None:
    built = ack()
    assert [seg[0] for seg in built.segments] == ["MSH", "MSA"]
    assert built.field("MSA", 3) == ""


@pytest.mark.parametrize(("kw", "field", "expected"), [
    ({"version": "2.3"}, 12, "2.3"),
    ({"version": "2.8"}, 12, "2.8"),
    ({"version": ""}, 12, "2.5"),          # default when the sender gave none
    ({"processing_id": "T"}, 11, "T"),
    ({"processing_id": ""}, 11, "P"),
    ({"character_set": "8859/1"}, 18, "8859/1"),
    ({"character_set": ""}, 18, ""),
    ({"trigger": ""}, 9, "ACK"),
])
def test_ack_echoes_header_variants(kw: dict[str, str], field: int, expected: str) -> None:
    assert ack(header(**kw)).field("MSH", field) == expected


@pytest.mark.parametrize("delimiters", [
    Delimiters(),
    CUSTOM,
    Delimiters(field="|", component="^", repetition="~", escape="\\", subcomponent="&",
               truncation="#"),
], ids=["default", "custom", "truncation"])
def test_ack_mirrors_the_senders_delimiters(delimiters: Delimiters) -> None:
    text = build_ack(header(delimiters=delimiters), "AE", "ACK0001", NOW, MISSING_PID3)
    d = delimiters
    assert text.startswith(f"MSH{d.field}{d.encoding_characters}{d.field}TC{d.field}HUB")
    built = Message(text)
    assert built.delimiters == delimiters
    assert (built.get("MSH", 9, 2), built.get("MSA", 2), built.get("ERR", 3, 1)) == (
        "A01", "MSG0001", "101")
    assert built.raw("ERR", 1, 4, 3) == "HL70357"


def test_msa2_echoes_raw_msh10_with_escape_sequence() -> None:
    verdict = inspect(b"MSH|^~\\&|HIS|WARD|TC|HUB|20240101||ADT^A01|A\\T\\B|P|2.5\r"
                      b"PID|||123\r")
    built = ack(verdict.header)
    assert built.raw("MSA", 2) == "A\\T\\B"


# -- errors: MSA-3 and ERR --------------------------------------------------------------------


@pytest.mark.parametrize(("location", "code", "eld", "erl", "cwe"), [
    (ErrorLocation("PID", 3), 101, "PID^1^3^101&Required field missing&HL70357", "PID^1^3",
     "101^Required field missing^HL70357"),
    (ErrorLocation("MSH", 9), 200, "MSH^1^9^200&Unsupported message type&HL70357", "MSH^1^9",
     "200^Unsupported message type^HL70357"),
    (ErrorLocation("MSH", 12), 203, "MSH^1^12^203&Unsupported version id&HL70357",
     "MSH^1^12", "203^Unsupported version id^HL70357"),
    (ErrorLocation("EVN"), 100, "EVN^1^^100&Segment sequence error&HL70357", "EVN^1^",
     "100^Segment sequence error^HL70357"),
    (ErrorLocation("NK1", 2, sequence=3), 102, "NK1^3^2^102&Data type error&HL70357",
     "NK1^3^2", "102^Data type error^HL70357"),
    (ErrorLocation("MSH", 4), 204, "MSH^1^4^204&Unknown key identifier&HL70357", "MSH^1^4",
     "204^Unknown key identifier^HL70357"),
    (ErrorLocation("PID", 3), 999, "PID^1^3^999&&HL70357", "PID^1^3", "999^^HL70357"),
])
def test_err_segment(location: ErrorLocation, code: int, eld: str, erl: str, cwe: str) -> None:
    text = build_ack(HEADER, "AE", "ACK0001", NOW, AckError(location, code, "why"))
    built = Message(text)
    assert built.get("MSA", 1) == "AE"
    assert built.get("MSA", 3) == "why"
    assert built.field("ERR", 1) == eld     # ERR-1 ELD (before 2.5)
    assert built.field("ERR", 2) == erl     # ERR-2 ERL (2.5+)
    assert built.field("ERR", 3) == cwe     # ERR-3 CWE, table 0357
    assert built.field("ERR", 4) == "E"     # ERR-4 severity
    assert built.get("ERR", 8) == "why"     # ERR-8 user message


@pytest.mark.parametrize(("delimiters", "reason", "escaped"), [
    (Delimiters(), "a|b^c~d\\e&f", "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f"),
    (Delimiters(), "line1\rline2\nline3", "line1\\.br\\line2\\.br\\line3"),
    (CUSTOM, "a#b!c@d%e*f|g^h", "a%F%b%S%c%R%d%E%e%T%f|g^h"),
])
def test_reason_is_escaped_in_msa3_and_err8(delimiters: Delimiters, reason: str,
                                            escaped: str) -> None:
    error = AckError(ErrorLocation("PID", 3), 101, reason)
    text = build_ack(header(delimiters=delimiters), "AE", "ACK0001", NOW, error)
    built = Message(text)
    assert built.raw("MSA", 3) == escaped
    assert built.raw("ERR", 8) == escaped
    assert len(built.segments) == 3  # no CR leaked from the reason
    assert built.get("ERR", 8) == reason.replace("\r", "\n")


def test_msa3_is_cut_at_80_characters_err8_keeps_all() -> None:
    reason = "PID-3 " + "x" * 200
    built = ack(code="AE", error=AckError(ErrorLocation("PID", 3), 101, reason))
    assert built.get("MSA", 3) == reason[:80]
    assert built.get("ERR", 8) == reason


@pytest.mark.parametrize("code", ["AA", "AE", "AR", "CA", "CE", "CR"])
def test_msa1_carries_the_code(code: str) -> None:
    error = None if code in ("AA", "CA") else MISSING_PID3
    assert ack(code=code, error=error).get("MSA", 1) == code


# -- well-formed for a third-party parser -----------------------------------------------------


@pytest.mark.parametrize("version", ["2.3", "2.5", "2.8"])
@pytest.mark.parametrize("with_error", [False, True], ids=["AA", "AE"])
def test_hl7apy_parses_the_ack(version: str, with_error: bool) -> None:
    error = AckError(ErrorLocation("PID", 3), 101, "PID-3 missing | ^ & ~ \\") if (
        with_error) else None
    text = build_ack(header(version=version), "AE" if with_error else "AA", "ACK0001", NOW,
                     error)
    parsed = parse_message(text, find_groups=False)
    assert parsed.version == version
    assert parsed.name == "ACK"
    assert parsed.msh.msh_10.to_er7() == "ACK0001"
    assert parsed.msa.msa_1.to_er7() == ("AE" if with_error else "AA")
    assert parsed.msa.msa_2.to_er7() == "MSG0001"
    assert [s.name for s in parsed.children] == (["MSH", "MSA", "ERR"] if with_error
                                                 else ["MSH", "MSA"])
    if with_error:
        if version == "2.3":
            assert parsed.err.err_1.to_er7() == "PID^1^3^101&Required field missing&HL70357"
        else:
            assert parsed.err.err_2.to_er7() == "PID^1^3"
            assert parsed.err.err_3.to_er7() == "101^Required field missing^HL70357"
            assert parsed.err.err_4.to_er7() == "E"
            assert parsed.err.err_8.to_er7() == "PID-3 missing \\F\\ \\S\\ \\T\\ \\R\\ \\E\\"
