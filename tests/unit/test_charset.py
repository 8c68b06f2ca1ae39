"""Decoding message bytes by MSH-18 (HL7 table 0211) and a UTF-8 byte-order mark."""

from __future__ import annotations

import pytest

from adt_listener.hl7.charset import UTF8_BOM, CharsetError, decode_message, sniff_charset


def adt(msh18: str, name: bytes) -> bytes:
    """An ADT^A01 whose MSH-18 is ``msh18`` and PID-5 is ``name``."""
    msh = "MSH|^~\\&|HIS|WARD|TC|TC|20240101||ADT^A01|C1|P|2.5|||||" + "|" + msh18
    return msh.encode("ascii") + b"\rPID|1||123^^^H^MR||" + name + b"^Jo\r"


@pytest.mark.parametrize(
    ("msh18", "expected"),
    [("", ""), ("8859/1", "8859/1"), ("UNICODE UTF-8", "UNICODE UTF-8"),
     ("8859/1~UNICODE UTF-8", "8859/1"), ("ASCII ", "ASCII")],
    ids=["empty", "latin-1", "utf-8", "repeated-first-wins", "stripped"],
)
def test_sniff_charset_reads_msh18(msh18: str, expected: str) -> None:
    assert sniff_charset(adt(msh18, b"Doe")) == expected
    assert sniff_charset(UTF8_BOM + adt(msh18, b"Doe")) == expected


@pytest.mark.parametrize(
    "raw",
    [b"", b"PID|1", b"MSH|^~\\&|A|B\rPID|1|||||||||||||||||||X"],
    ids=["empty", "no-msh", "short"],
)
def test_sniff_charset_without_msh18(raw: bytes) -> None:
    assert sniff_charset(raw) == ""


@pytest.mark.parametrize(
    ("raw", "text_name", "codec"),
    [
        (adt("", b"Doe"), "Doe", "ascii"),
        (adt("ASCII", b"Doe"), "Doe", "ascii"),
        (adt("8859/1", "Müller".encode("latin-1")), "Müller", "latin-1"),
        (adt("8859/1", "Ñúñez".encode("latin-1")), "Ñúñez", "latin-1"),
        (adt("UNICODE UTF-8", "Müller".encode()), "Müller", "utf-8"),
        (adt("UNICODE UTF-8", "Łukasz 李".encode()), "Łukasz 李", "utf-8"),
        (adt("unicode utf-8", "Zoë".encode()), "Zoë", "utf-8"),  # case-insensitive
        (adt("8859/15", "€uro".encode("iso8859-15")), "€uro", "iso8859-15"),
        # No MSH-18 but valid UTF-8: many senders do this.
        (adt("", "Zoë".encode()), "Zoë", "utf-8"),
        # Documented: declares 8859/1 but carries valid UTF-8 multi-byte text -> read as UTF-8.
        (adt("8859/1", "Müller".encode()), "Müller", "utf-8"),
    ],
    ids=["no-msh18", "ascii", "latin-1", "latin-1-accents", "utf-8", "utf-8-cjk",
         "lowercase-name", "8859-15", "undeclared-utf-8", "latin-1-declared-utf-8-sent"],
)
def test_decode_message(raw: bytes, text_name: str, codec: str) -> None:
    text, used = decode_message(raw)
    assert used == codec
    assert f"||{text_name}^Jo\r" in text
    assert text.startswith("MSH|^~\\&|")


@pytest.mark.parametrize("msh18", ["", "8859/1", "ASCII"])
def test_utf8_bom_means_utf8_whatever_msh18_says(msh18: str) -> None:
    text, used = decode_message(UTF8_BOM + adt(msh18, "Müller".encode()))
    assert used == "utf-8"
    assert text.startswith("MSH|")  # BOM removed
    assert "Müller" in text


def test_utf8_bom_with_invalid_utf8_raises() -> None:
    with pytest.raises(CharsetError):
        decode_message(UTF8_BOM + adt("", b"M\xfcller"))


@pytest.mark.parametrize("msh18", ["", "ASCII"])
def test_cp1252_byte_in_ascii_message_names_byte_and_offset(msh18: str) -> None:
    raw = adt(msh18, b"O\x92Brien")  # cp1252 right single quote
    offset = raw.index(b"\x92")
    with pytest.raises(CharsetError) as caught:
        decode_message(raw)
    assert "0x92" in caught.value.reason
    assert f"offset {offset}" in caught.value.reason
    assert str(caught.value) == caught.value.reason


def test_invalid_utf8_in_utf8_message_raises() -> None:
    raw = adt("UNICODE UTF-8", b"M\xfcller")
    offset = raw.index(b"\xfc")
    with pytest.raises(CharsetError) as caught:
        decode_message(raw)
    assert f"0xFC at offset {offset}" in caught.value.reason


@pytest.mark.parametrize("msh18", ["ISO IR87", "KLINGON", "UNICODE UTF-16"])
def test_unsupported_msh18_raises(msh18: str) -> None:
    with pytest.raises(CharsetError) as caught:
        decode_message(adt(msh18, b"Doe"))
    assert caught.value.charset == msh18
    assert msh18 in caught.value.reason


def test_default_codec_applies_when_msh18_is_empty() -> None:
    text, used = decode_message(adt("", b"M\xfcller"), default="8859/1")
    assert (used, "Müller" in text) == ("latin-1", True)
