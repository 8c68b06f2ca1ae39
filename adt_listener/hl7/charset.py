"""Decoding message bytes by MSH-18 (HL7 table 0211) and a UTF-8 byte-order mark."""

from __future__ import annotations

import codecs

# HL7 table 0211 character-set names to Python codecs.
_CODECS = {
    "": "ascii",
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "WINDOWS-1252": "cp1252",
    "CP1252": "cp1252",
}
UTF8_BOM = codecs.BOM_UTF8


class CharsetError(ValueError):
    """The message bytes cannot be decoded; ``reason`` says which character set and where."""

    def __init__(self, reason: str, charset: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.charset = charset


def sniff_charset(raw: bytes) -> str:
    """MSH-18 as written, read from the raw bytes without decoding the whole message."""
    if raw.startswith(UTF8_BOM):
        raw = raw[3:]
    if not raw.startswith(b"MSH") or len(raw) < 4:
        return ""
    sep = raw[3:4]
    end = len(raw)
    for stop in (b"\r", b"\n"):
        i = raw.find(stop)
        if 0 <= i < end:
            end = i
    fields = raw[:end].split(sep)
    # fields[0] is 'MSH', so MSH-n is fields[n - 1].
    if len(fields) < 18:
        return ""
    first = fields[17].split(b"~")[0]
    return first.decode("ascii", "replace").strip()


def decode_message(raw: bytes, default: str = "ascii") -> tuple[str, str]:
    """Decode message bytes.

    A UTF-8 BOM means UTF-8 whatever MSH-18 says. Otherwise MSH-18 picks the codec; with no
    MSH-18 the ``default`` is tried, then UTF-8 (many senders send UTF-8 and declare nothing).
    A message that declares ASCII or 8859/1 but carries valid UTF-8 multi-byte text is read as
    UTF-8: that is what the sender meant and Latin-1 would silently garble it.

    Returns:
        (text, codec used)

    Raises:
        CharsetError: the bytes are not valid in the declared (or default) character set.
    """
    if raw.startswith(UTF8_BOM):
        return _strict(raw[3:], "utf-8", "UTF-8 (byte-order mark)")
    declared = sniff_charset(raw)
    codec = _CODECS.get(declared.upper())
    if codec is None:
        raise CharsetError(f"MSH-18 character set {declared!r} is not supported", declared)
    if raw.isascii():
        return raw.decode("ascii"), codec
    if codec in ("ascii", "latin-1") and _is_utf8(raw):
        return raw.decode("utf-8"), "utf-8"
    if not declared and codec == "ascii":
        codec = _CODECS.get(default.upper(), default)
    return _strict(raw, codec, declared or "ASCII (MSH-18 empty)")


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _strict(raw: bytes, codec: str, label: str) -> tuple[str, str]:
    try:
        return raw.decode(codec), codec
    except UnicodeDecodeError as exc:
        raise CharsetError(
            f"byte 0x{raw[exc.start]:02X} at offset {exc.start} is not valid {label}", label
        ) from exc
