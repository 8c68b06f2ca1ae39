"""Splitting a non-framed HL7 file (batch dump, sample file) into messages."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from adt_listener.hl7.charset import decode_message
from adt_listener.hl7.er7 import Message
from adt_listener.hl7.framing import split_file

STREAMS = Path(__file__).parents[2].parent / "shared" / "corpus" / "streams"
INDEX = STREAMS / "STREAMS_INDEX.tsv"
MISSING = f"HL7 stream corpus not found: expected {INDEX} (shared/corpus/streams next to main/)"


def _index_rows() -> list[tuple[str, int]]:
    """(file, MSH count) per row of STREAMS_INDEX.tsv; one sentinel row when it is missing."""
    if not INDEX.is_file():
        return [("", -1)]
    with INDEX.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [(r["file"], int(r["MSH count"].split()[0])) for r in rows]


def test_corpus_is_present() -> None:
    if not INDEX.is_file():
        pytest.fail(MISSING)
    listed = {name for name, _ in _index_rows()}
    on_disk = {p.name for p in STREAMS.glob("*.raw")}
    assert listed == on_disk, "STREAMS_INDEX.tsv and the .raw files disagree"


@pytest.mark.parametrize(("name", "msh_count"), _index_rows(), ids=lambda v: str(v))
def test_corpus_file_splits_into_indexed_message_count(name: str, msh_count: int) -> None:
    if msh_count < 0:
        pytest.fail(MISSING)
    path = STREAMS / name
    assert path.is_file(), f"{path} is listed in STREAMS_INDEX.tsv but missing"
    messages = split_file(path.read_bytes())
    assert len(messages) == msh_count
    for raw in messages:
        assert raw.startswith(b"MSH")
        assert raw.endswith(b"\r")
        assert b"\n" not in raw and b"\r\r" not in raw and b"\x0b" not in raw
        text, _ = decode_message(raw)
        m = Message(text)
        assert m.field("MSH", 10), "every message keeps its MSH-10 control id"


@pytest.mark.parametrize(
    ("name", "control_ids"),
    [
        ("hapi__Hl7InputStreamMessageIteratorTest_L28.raw", ["102416", "102417", "102418"]),
        ("hapi__Hl7InputStreamMessageIteratorTest_L63.raw", ["102416", "102417", "102418"]),
        ("hapi__Hl7InputStreamMessageIteratorTest_L98.raw", ["102416", "102417", "102418"]),
        ("hapi__Hl7InputStreamMessageIteratorTest_L201.raw", ["102416", "102417", "102418"]),
        ("pyhl7__sample_batch2.raw", ["12334456778890", "12334456778891"]),
    ],
)
def test_corpus_messages_keep_their_order_and_segments(name: str, control_ids: list[str]) -> None:
    path = STREAMS / name
    if not path.is_file():
        pytest.fail(MISSING)
    messages = [Message(decode_message(raw)[0]) for raw in split_file(path.read_bytes())]
    assert [m.field("MSH", 10) for m in messages] == control_ids  # MSH-10
    assert all(m.count("PID") == 1 for m in messages)


A = b"MSH|^~\\&|HIS|WARD|TC|TC|20240101||ADT^A01|C1|P|2.5\rEVN|A01\rPID|1||111\r"
B = b"MSH|^~\\&|HIS|WARD|TC|TC|20240101||ADT^A03|C2|P|2.5\rEVN|A03\rPID|1||222\r"


def lines(msg: bytes, eol: bytes) -> bytes:
    return msg.replace(b"\r", eol)


@pytest.mark.parametrize(
    "data",
    [
        A + B,
        lines(A, b"\n") + lines(B, b"\n"),
        lines(A, b"\r\n") + lines(B, b"\r\n"),
        A + b"\r\n" + B,  # CR in messages, CRLF between (HAPI style)
        lines(A, b"\r\n") + lines(B, b"\n"),
        lines(A, b"\n") + b"\n\n" + B + b"\r\n\r\n",
        b"  \n\t\r\n" + A + b"   \r\n" + B + b"\n  \n",  # whitespace around messages
        A + B.rstrip(b"\r"),  # no final segment terminator
    ],
    ids=["CR", "LF", "CRLF", "CR-then-CRLF", "CRLF-then-LF", "blank-lines", "whitespace",
         "no-final-eol"],
)
def test_line_ending_mixes(data: bytes) -> None:
    assert split_file(data) == [A, B]


@pytest.mark.parametrize(
    "data",
    [
        b"# exported 2024-01-01\r\n" + A + b"#So is this\r\n" + B,
        b"#first\n  # indented comment\n" + lines(A, b"\n") + b"\n# between\n\n" + B,
        A + b"# trailing comment\r\n" + B + b"#end",
    ],
    ids=["crlf-comments", "lf-indented-comments", "trailing-comment"],
)
def test_comment_lines_are_dropped(data: bytes) -> None:
    assert split_file(data) == [A, B]


@pytest.mark.parametrize(
    "data",
    [
        b"\x0b" + A + b"\x1c\r" + b"\x0b" + B + b"\x1c\r",  # MLLP framed dump
        b"\x0b" + A + b"\r\x0b" + B + b"\r",  # start byte only (HAPI L201 style)
        b"\x0b" + A.rstrip(b"\r") + b"\x1c\r\x0b" + B.rstrip(b"\r") + b"\x1c\r",
        b"\x00\x0b" + A + b"\x1c\r\n\x0b" + B + b"\x1c",
    ],
    ids=["framed", "leading-vt-only", "fs-right-after-segment", "nul-and-crlf"],
)
def test_stray_mllp_bytes_are_dropped(data: bytes) -> None:
    assert split_file(data) == [A, B]


@pytest.mark.parametrize("eol", [b"\r", b"\n", b"\r\n"], ids=["CR", "LF", "CRLF"])
def test_batch_envelope_is_dropped(eol: bytes) -> None:
    data = lines(
        b"FHS|^~\\&|HIS|WARD|||20240101\r"
        b"BHS|^~\\&|HIS|WARD|||20240101\r" + A + B + b"BTS|2\rFTS|1\r",
        eol,
    )
    assert split_file(data) == [A, B]


def test_empty_and_blank_files_hold_no_messages() -> None:
    assert split_file(b"") == []
    assert split_file(b"\r\n \n# only a comment\n\x0b\x1c\r") == []
