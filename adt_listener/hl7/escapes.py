"""HL7 v2 escape sequences (section 2.7): \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\ \\.br\\ and friends."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adt_listener.hl7.er7 import Delimiters


def unescape(value: str, d: Delimiters) -> str:
    """Decode the escape sequences of a leaf value.

    Formatting commands (``\\.br\\`` becomes a line break, ``\\H\\``/``\\N\\`` highlighting is
    dropped), hexadecimal data ``\\Xhh..\\`` is decoded as Latin-1 bytes. An unterminated or
    unknown sequence is kept as written: the data is never lost.
    """
    esc = d.escape
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch != esc:
            out.append(ch)
            i += 1
            continue
        end = value.find(esc, i + 1)
        if end < 0:
            out.append(value[i:])
            break
        out.append(_decode_one(value[i + 1 : end], d, value[i : end + 1]))
        i = end + 1
    return "".join(out)


def _decode_one(code: str, d: Delimiters, original: str) -> str:
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition,
              "E": d.escape, "H": "", "N": ""}
    if d.truncation:
        # \P\ exists only when MSH-2 declares a truncation character (v2.7+).
        simple["P"] = d.truncation
    if code in simple:
        return simple[code]
    if code == ".br":
        return "\n"
    if code.startswith(".sp"):
        return "\n"
    if code.startswith("X") and len(code) > 1 and len(code) % 2 == 1:
        try:
            return bytes.fromhex(code[1:]).decode("latin-1")
        except ValueError:
            return original
    if code.startswith((".", "C", "M", "Z")):
        return ""
    return original


def escape(value: str, d: Delimiters) -> str:
    """Escape a text value so it can be written into a field."""
    e = d.escape
    table = {e: f"{e}E{e}", d.field: f"{e}F{e}", d.component: f"{e}S{e}",
             d.subcomponent: f"{e}T{e}", d.repetition: f"{e}R{e}"}
    if d.truncation:
        table[d.truncation] = f"{e}P{e}"
    return "".join(table.get(c, c) for c in value).replace("\r", f"{e}.br{e}").replace(
        "\n", f"{e}.br{e}")
