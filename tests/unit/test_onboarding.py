"""hl7apy strict validation for onboarding a feed (``transcare validate``)."""

from __future__ import annotations

import pytest

from adt_listener.onboarding import validate_strict

VALID_A01 = (
    "MSH|^~\\&|REG|GENHOSP|TC|TC|20261123101500||ADT^A01^ADT_A01|C1|P|2.5\r"
    "EVN|A01|20261123101500\r"
    "PID|1||123^^^GENHOSP^MR||DOE^JANE||19700101|F\r"
    "PV1|1|I|W1^101^A\r"
)


@pytest.mark.parametrize(
    ("text", "where_contains"),
    [
        (VALID_A01.replace("PV1|1|I|W1^101^A\r", ""), "PV1"),  # PV1 is required in ADT_A01
        ("MSH|^~\\&|REG|GENHOSP|||20261123||ADT^A01|C1|P|9.9\r", "version 9.9"),
    ],
)
def test_strict_findings_name_what_is_wrong(text: str, where_contains: str) -> None:
    findings = validate_strict(text)
    assert findings, "expected hl7apy to report a problem"
    assert any(where_contains in f.where or where_contains in f.problem for f in findings)


def test_a_conforming_message_has_no_findings() -> None:
    assert validate_strict(VALID_A01) == []
