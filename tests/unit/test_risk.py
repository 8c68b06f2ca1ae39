"""LACE index points, bands and edge cases; Charlson conditions from ICD-10(-CM) codes (Quan 2005)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from transitions.risk import (
    CHARLSON_ICD10_PREFIXES,
    CHARLSON_WEIGHTS,
    SUPERSEDES,
    Lace,
    charlson_conditions,
    charlson_score,
    lace,
    lace_band,
    lace_or_none,
    length_of_stay_days,
)

ADMIT = datetime(2025, 3, 10, 14, 30)


def _lace(days: int = 0, emergent: bool = False, codes: tuple[str, ...] = (), ed: int = 0) -> Lace:
    return lace(ADMIT, ADMIT + timedelta(days=days), emergent, codes, ed)


# --- L: length of stay -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "points"),
    [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (6, 4), (7, 5), (13, 5), (14, 7), (60, 7)],
)
def test_length_of_stay_points(days: int, points: int) -> None:
    result = _lace(days=days)
    assert (result.length_of_stay_days, result.l) == (days, points)


@pytest.mark.parametrize(
    ("admitted_at", "discharged_at", "days"),
    [
        # calendar-day difference of the dates, not elapsed 24-hour periods
        (datetime(2025, 3, 10, 23, 0), datetime(2025, 3, 11, 1, 0), 1),
        (datetime(2025, 3, 10, 0, 5), datetime(2025, 3, 10, 23, 55), 0),
        (datetime(2025, 3, 10, 1, 0), datetime(2025, 3, 12, 23, 0), 2),
        # aware times are read on the admission's calendar
        (
            datetime(2025, 3, 10, 22, 0, tzinfo=ZoneInfo("America/New_York")),
            datetime(2025, 3, 11, 3, 30, tzinfo=UTC),  # 23:30 in New York
            0,
        ),
    ],
)
def test_length_of_stay_is_calendar_days(admitted_at: datetime, discharged_at: datetime, days: int) -> None:
    assert length_of_stay_days(admitted_at, discharged_at) == days


# --- A: acuity ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("emergent", "points"), [(True, 3), (False, 0)])
def test_acuity_points(emergent: bool, points: int) -> None:
    assert _lace(emergent=emergent).a == points


# --- C: comorbidity ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codes", "charlson", "points"),
    [
        ((), 0, 0),
        (("I21.4",), 1, 1),
        (("I21.4", "I50.9"), 2, 2),
        (("I21.4", "I50.9", "J44.9"), 3, 3),
        (("I21.4", "I50.9", "J44.9", "K25.9"), 4, 5),
        (("C78.7",), 6, 5),
    ],
)
def test_comorbidity_points(codes: tuple[str, ...], charlson: int, points: int) -> None:
    result = _lace(codes=codes)
    assert (result.charlson, result.c) == (charlson, points)


# --- E: emergency department visits ------------------------------------------------------------


@pytest.mark.parametrize(("visits", "points"), [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (9, 4)])
def test_ed_visit_points(visits: int, points: int) -> None:
    result = _lace(ed=visits)
    assert (result.ed_visits_6m, result.e) == (visits, points)


# --- total and band ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "band"),
    [(0, "low"), (4, "low"), (5, "moderate"), (9, "moderate"), (10, "high"), (19, "high")],
)
def test_band_boundaries(total: int, band: str) -> None:
    assert lace_band(total) == band


@pytest.mark.parametrize(
    ("days", "emergent", "ed", "total", "band"),
    [
        (4, False, 0, 4, "low"),  # L4
        (7, False, 0, 5, "moderate"),  # L5
        (7, False, 4, 9, "moderate"),  # L5 + E4
        (7, True, 2, 10, "high"),  # L5 + A3 + E2
    ],
)
def test_total_and_band_at_the_boundaries(days: int, emergent: bool, ed: int, total: int, band: str) -> None:
    result = _lace(days=days, emergent=emergent, ed=ed)
    assert (result.total, result.band) == (total, band)
    assert result.total == result.l + result.a + result.c + result.e


def test_highest_possible_lace() -> None:
    result = _lace(days=20, emergent=True, codes=("C78.7", "B20"), ed=6)
    assert (result.l, result.a, result.c, result.e, result.total) == (7, 3, 5, 4, 19)
    assert result.charlson == 12


def test_as_dict_is_json_ready() -> None:
    result = _lace(days=3, emergent=True, codes=("I50.9",), ed=1)
    stored = json.loads(json.dumps(result.as_dict()))
    assert stored == {
        "length_of_stay_days": 3,
        "l": 3,
        "a": 3,
        "c": 1,
        "e": 1,
        "charlson": 1,
        "ed_visits_6m": 1,
        "total": 8,
        "band": "moderate",
    }
    assert Lace(**stored) == result


@pytest.mark.parametrize(
    ("admitted_at", "discharged_at"),
    [
        (None, ADMIT),
        (ADMIT, None),
        (None, None),
        (ADMIT, ADMIT - timedelta(minutes=1)),  # discharge precedes admission
    ],
)
def test_lace_or_none_without_usable_times(
    admitted_at: datetime | None, discharged_at: datetime | None
) -> None:
    assert lace_or_none(admitted_at, discharged_at, True, ["I50.9"], 1) is None


def test_lace_or_none_with_usable_times() -> None:
    result = lace_or_none(ADMIT, ADMIT, False, ["I50.9"], 0)
    assert result == _lace(codes=("I50.9",))


@pytest.mark.parametrize(
    ("discharged_at", "ed"),
    [(ADMIT - timedelta(seconds=1), 0), (ADMIT, -1)],
)
def test_lace_rejects_impossible_input(discharged_at: datetime, ed: int) -> None:
    with pytest.raises(ValueError):
        lace(ADMIT, discharged_at, False, [], ed)


# --- Charlson (Quan 2005 ICD-10) ---------------------------------------------------------------

SAMPLE_CODES = [
    ("I21.4", "myocardial_infarction", 1),
    ("I25.2", "myocardial_infarction", 1),
    ("I50.22", "congestive_heart_failure", 1),
    ("I11.0", "congestive_heart_failure", 1),
    ("I70.0", "peripheral_vascular_disease", 1),
    ("I63.9", "cerebrovascular_disease", 1),
    ("G45.9", "cerebrovascular_disease", 1),
    ("G30.9", "dementia", 1),
    ("F03.90", "dementia", 1),
    ("J44.9", "chronic_pulmonary_disease", 1),
    ("M05.79", "rheumatic_disease", 1),
    ("M32.9", "rheumatic_disease", 1),
    ("K25.9", "peptic_ulcer_disease", 1),
    ("K70.30", "mild_liver_disease", 1),
    ("B18.2", "mild_liver_disease", 1),
    ("E11.9", "diabetes_without_complications", 1),
    ("E10.65", "diabetes_without_complications", 1),
    ("E11.22", "diabetes_with_complications", 2),
    ("E10.40", "diabetes_with_complications", 2),
    ("G81.91", "hemiplegia_paraplegia", 2),
    ("N18.6", "renal_disease", 2),
    ("Z99.2", "renal_disease", 2),
    ("C34.90", "malignancy", 2),
    ("C91.00", "malignancy", 2),
    ("K76.6", "moderate_severe_liver_disease", 3),
    ("I85.00", "moderate_severe_liver_disease", 3),
    ("C78.7", "metastatic_solid_tumour", 6),
    ("C79.51", "metastatic_solid_tumour", 6),
    ("B20", "aids_hiv", 6),
]


@pytest.mark.parametrize(("code", "condition", "weight"), SAMPLE_CODES)
@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param(lambda code: code, id="dotted"),
        pytest.param(lambda code: code.replace(".", ""), id="undotted"),
        pytest.param(lambda code: f" {code.lower()} ", id="lower-padded"),
    ],
)
def test_each_condition_from_a_sample_code(
    code: str, condition: str, weight: int, spelling: Callable[[str], str]
) -> None:
    written = spelling(code)
    assert charlson_conditions([written]) == {condition: weight}
    assert charlson_score([written]) == weight


def test_every_condition_has_a_sample_code_and_a_weight() -> None:
    assert {condition for _, condition, _ in SAMPLE_CODES} == set(CHARLSON_ICD10_PREFIXES)
    assert set(CHARLSON_WEIGHTS) == set(CHARLSON_ICD10_PREFIXES)
    assert set(SUPERSEDES) | set(SUPERSEDES.values()) <= set(CHARLSON_WEIGHTS)


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        (["E11.9", "E11.22"], {"diabetes_with_complications": 2}),
        (["K70.30", "K76.6"], {"moderate_severe_liver_disease": 3}),
        (["C34.90", "C78.7"], {"metastatic_solid_tumour": 6}),
        (
            ["C78.7", "C34.90", "E11.22", "E119"],
            {"diabetes_with_complications": 2, "metastatic_solid_tumour": 6},
        ),
    ],
)
def test_severe_form_supersedes_the_mild_one(codes: list[str], expected: dict[str, int]) -> None:
    assert charlson_conditions(codes) == expected
    assert charlson_score(codes) == sum(expected.values())


@pytest.mark.parametrize(
    ("codes", "score"),
    [
        (["I21.4", "I21.9", "I25.2"], 1),  # one condition counts once
        (["I21.4", "E11.22"], 3),
        (["I50.9", "N18.6", "C34.90", "G81.91"], 7),
    ],
)
def test_conditions_add_up(codes: list[str], score: int) -> None:
    assert charlson_score(codes) == score


@pytest.mark.parametrize(
    "codes",
    [
        [],
        [""],
        ["   "],
        ["R07.9"],  # chest pain
        ["I25.10"],  # coronary artery disease, not an old infarction
        ["C44.91"],  # skin cancer is excluded
        ["I42.1"],  # obstructive hypertrophic cardiomyopathy is not in the list
        ["Z00.00", "XYZ", "12345"],
    ],
)
def test_unknown_codes_score_zero(codes: list[str]) -> None:
    assert charlson_conditions(codes) == {}
    assert charlson_score(codes) == 0
