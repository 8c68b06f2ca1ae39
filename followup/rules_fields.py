"""Typed, located reading of one TOML table for the rule loader.

Every error is a :class:`~followup.rules.RuleError` whose message is
``{where}: {field}: {problem}``, e.g. ``rules.toml: rule "x": due: "2X" is not an offset ...``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from followup.offsets import Offset, parse_offset
from followup.rules import RuleError

_MISSING: Any = object()


class Fields:
    """One TOML table: ``where`` names it (source and rule), ``prefix`` goes before each key
    ("trigger."), ``allowed`` are its keys. Unknown keys are rejected on construction."""

    def __init__(self, where: str, table: object, allowed: Iterable[str], prefix: str = ""):
        self.where, self.prefix, self.allowed = where, prefix, tuple(allowed)
        if not isinstance(table, Mapping):
            raise RuleError(f"{where}: {prefix.rstrip('.') or 'table'}: expected a table")
        self.table: Mapping[str, Any] = table
        for key in table:
            if key not in self.allowed:
                self.fail(key, f"unknown key{_did_you_mean(key, self.allowed)}")

    def fail(self, key: str, problem: str) -> NoReturn:
        raise RuleError(f"{self.where}: {self.prefix}{key}: {problem}")

    def has(self, key: str) -> bool:
        return key in self.table

    def _get(self, key: str, default: Any, kind: type | tuple[type, ...], expected: str) -> Any:
        value = self.table.get(key, default)
        if value is _MISSING:
            self.fail(key, "missing (required)")
        if value is not default and (not isinstance(value, kind) or isinstance(value, bool)
                                     and kind is not bool):
            self.fail(key, f"expected {expected}, got {value!r}")
        return value

    def text(self, key: str, default: Any = _MISSING) -> str:
        """A string; required unless a default is given. Empty text is rejected."""
        value = self._get(key, default, str, "a string")
        if value is not default and not value.strip():
            self.fail(key, "must not be empty")
        return str(value)

    def flag(self, key: str, default: bool) -> bool:
        return bool(self._get(key, default, bool, "true or false"))

    def integer(self, key: str, default: Any = _MISSING) -> int:
        return int(self._get(key, default, int, "an integer"))

    def texts(self, key: str, default: Any = ()) -> tuple[str, ...]:
        """A list of strings, stripped and de-duplicated in order (default empty)."""
        value = self._get(key, default, (list, tuple), "a list of strings")
        for item in value:
            if not isinstance(item, str) or not item.strip():
                self.fail(key, f"expected a list of strings, got {item!r}")
        return tuple(dict.fromkeys(item.strip() for item in value))

    def choice(self, key: str, options: Iterable[str], default: Any = _MISSING) -> str:
        value = self.text(key, default)
        return self._check_option(key, value, tuple(options))

    def choices(self, key: str, options: Iterable[str], required: bool = False) -> tuple[str, ...]:
        values = self.texts(key, _MISSING if required else ())
        if required and not values:
            self.fail(key, "must list at least one value")
        return tuple(self._check_option(key, v, tuple(options)) for v in values)

    def _check_option(self, key: str, value: str, options: tuple[str, ...]) -> str:
        if value not in options:
            allowed = ", ".join(f'"{o}"' for o in options)
            self.fail(key, f'"{value}" is not one of {allowed}{_did_you_mean(value, options)}')
        return value

    def offset(self, key: str, default: Any = _MISSING) -> Offset | None:
        """An offset ("2B", "P14D", "-P1D", "0"); None when absent and the default is None."""
        value = self._get(key, default, str, 'an offset string such as "2B" or "P14D"')
        if value is None:
            return None
        try:
            return parse_offset(value)
        except ValueError as exc:
            self.fail(key, str(exc))

    def tables(self, key: str, default: Any = _MISSING) -> list[Any]:
        """A list of tables (an array of tables or inline tables)."""
        value = self._get(key, default, (list, tuple), "a list of tables")
        return list(value)


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""
