"""Readmission risk at discharge: the LACE index and the Charlson comorbidity score it uses.

LACE is from van Walraven C, Dhalla IA, Bell C, et al. "Derivation and validation of an index to
predict early death or unplanned readmission after discharge from hospital to the community."
CMAJ 2010;182(6):551-557. It adds points for Length of stay, Acuity of the admission,
Comorbidity (the Charlson score) and Emergency department visits in the prior six months;
0-4 is low risk, 5-9 moderate, 10 and above high (DOMAIN.md section 6).

Charlson conditions are found from ICD-10(-CM) diagnosis codes (DG1-3) with the Quan 2005
ICD-10 coding algorithm and weighted with the original Charlson weights that LACE uses.

Pure functions, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

LaceBand = Literal["low", "moderate", "high"]

# Quan H, Sundararajan V, Halfon P, et al. "Coding algorithms for defining comorbidities in
# ICD-9-CM and ICD-10 administrative data." Med Care 2005;43(11):1130-1139, Table 1, the
# Charlson ICD-10 column. Each entry is a code prefix as published ("I25.2" matches I25.2 and
# every code below it, such as ICD-10-CM I25.2x); ranges in the paper are written out.
# Codes that exist only in ICD-10-CM (E08, E09, ...) are not in the published algorithm.
CHARLSON_ICD10_PREFIXES: Mapping[str, tuple[str, ...]] = {
    "myocardial_infarction": ("I21", "I22", "I25.2"),
    "congestive_heart_failure": (
        "I09.9", "I11.0", "I13.0", "I13.2", "I25.5", "I42.0",
        "I42.5", "I42.6", "I42.7", "I42.8", "I42.9", "I43", "I50", "P29.0",
    ),
    "peripheral_vascular_disease": (
        "I70", "I71", "I73.1", "I73.8", "I73.9", "I77.1", "I79.0", "I79.2",
        "K55.1", "K55.8", "K55.9", "Z95.8", "Z95.9",
    ),
    "cerebrovascular_disease": (
        "G45", "G46", "H34.0", "I60", "I61", "I62", "I63", "I64", "I65", "I66", "I67", "I68", "I69",
    ),
    "dementia": ("F00", "F01", "F02", "F03", "F05.1", "G30", "G31.1"),
    "chronic_pulmonary_disease": (
        "I27.8", "I27.9", "J40", "J41", "J42", "J43", "J44", "J45", "J46", "J47",
        "J60", "J61", "J62", "J63", "J64", "J65", "J66", "J67", "J68.4", "J70.1", "J70.3",
    ),
    "rheumatic_disease": ("M05", "M06", "M31.5", "M32", "M33", "M34", "M35.1", "M35.3", "M36.0"),
    "peptic_ulcer_disease": ("K25", "K26", "K27", "K28"),
    "mild_liver_disease": (
        "B18", "K70.0", "K70.1", "K70.2", "K70.3", "K70.9", "K71.3", "K71.4", "K71.5", "K71.7",
        "K73", "K74", "K76.0", "K76.2", "K76.3", "K76.4", "K76.8", "K76.9", "Z94.4",
    ),
    "diabetes_without_complications": tuple(
        f"E1{t}.{d}" for t in "01234" for d in "01689"
    ),
    "diabetes_with_complications": tuple(f"E1{t}.{d}" for t in "01234" for d in "23457"),
    "hemiplegia_paraplegia": (
        "G04.1", "G11.4", "G80.1", "G80.2", "G81", "G82",
        "G83.0", "G83.1", "G83.2", "G83.3", "G83.4", "G83.9",
    ),
    "renal_disease": (
        "I12.0", "I13.1", "N03.2", "N03.3", "N03.4", "N03.5", "N03.6", "N03.7",
        "N05.2", "N05.3", "N05.4", "N05.5", "N05.6", "N05.7",
        "N18", "N19", "N25.0", "Z49.0", "Z49.1", "Z49.2", "Z94.0", "Z99.2",
    ),
    # any malignancy, including lymphoma and leukaemia, except malignant neoplasm of skin
    "malignancy": tuple(
        [f"C{n:02d}" for n in range(0, 27)]
        + [f"C{n}" for n in (30, 31, 32, 33, 34, 37, 38, 39, 40, 41, 43)]
        + [f"C{n}" for n in range(45, 59)]
        + [f"C{n}" for n in range(60, 77)]
        + ["C81", "C82", "C83", "C84", "C85", "C88"]
        + [f"C{n}" for n in range(90, 98)]
    ),
    "moderate_severe_liver_disease": (
        "I85.0", "I85.9", "I86.4", "I98.2", "K70.4", "K71.1", "K72.1", "K72.9",
        "K76.5", "K76.6", "K76.7",
    ),
    "metastatic_solid_tumour": ("C77", "C78", "C79", "C80"),
    "aids_hiv": ("B20", "B21", "B22", "B24"),
}  # fmt: skip

# Charlson ME, Pompei P, Ales KL, MacKenzie CR. J Chronic Dis 1987;40(5):373-383: the weights
# LACE uses (van Walraven 2010).
CHARLSON_WEIGHTS: Mapping[str, int] = {
    "myocardial_infarction": 1,
    "congestive_heart_failure": 1,
    "peripheral_vascular_disease": 1,
    "cerebrovascular_disease": 1,
    "dementia": 1,
    "chronic_pulmonary_disease": 1,
    "rheumatic_disease": 1,
    "peptic_ulcer_disease": 1,
    "mild_liver_disease": 1,
    "diabetes_without_complications": 1,
    "diabetes_with_complications": 2,
    "hemiplegia_paraplegia": 2,
    "renal_disease": 2,
    "malignancy": 2,
    "moderate_severe_liver_disease": 3,
    "metastatic_solid_tumour": 6,
    "aids_hiv": 6,
}

# severe form -> the milder form of the same condition it replaces
SUPERSEDES: Mapping[str, str] = {
    "diabetes_with_complications": "diabetes_without_complications",
    "moderate_severe_liver_disease": "mild_liver_disease",
    "metastatic_solid_tumour": "malignancy",
}


def normalise_icd10(code: str) -> str:
    """An ICD-10 code compared without blanks or dots and in upper case ("i25.2 " -> "I252")."""
    return "".join(code.split()).replace(".", "").upper()


_PREFIXES: tuple[tuple[str, str], ...] = tuple(
    (normalise_icd10(prefix), condition)
    for condition, prefixes in CHARLSON_ICD10_PREFIXES.items()
    for prefix in prefixes
)


def _conditions_of(code: str) -> set[str]:
    normalised = normalise_icd10(code)
    if not normalised:
        return set()
    return {condition for prefix, condition in _PREFIXES if normalised.startswith(prefix)}


def charlson_conditions(codes: Iterable[str]) -> dict[str, int]:
    """The Charlson conditions the diagnosis codes show, each with its weight.

    Codes may be written with or without the dot and in any case; codes that map to no condition
    are ignored. When a milder and a severe form of the same condition are both present
    (diabetes, liver disease, malignancy/metastatic tumour) only the severe form is kept.
    """
    found: set[str] = set()
    for code in codes:
        found |= _conditions_of(code)
    found -= {SUPERSEDES[severe] for severe in found if severe in SUPERSEDES}
    return {condition: CHARLSON_WEIGHTS[condition] for condition in sorted(found)}


def charlson_score(codes: Iterable[str]) -> int:
    """The Charlson comorbidity score: the sum of the weights of :func:`charlson_conditions`."""
    return sum(charlson_conditions(codes).values())


# (lowest value, points), highest threshold first: van Walraven 2010, Table 2 (LACE index).
_L_POINTS = ((14, 7), (7, 5), (4, 4), (3, 3), (2, 2), (1, 1), (0, 0))
_C_POINTS = ((4, 5), (3, 3), (2, 2), (1, 1), (0, 0))
_E_POINTS = ((4, 4), (3, 3), (2, 2), (1, 1), (0, 0))
ACUTE_ADMISSION_POINTS = 3


def _points(value: int, table: tuple[tuple[int, int], ...]) -> int:
    return next(points for lowest, points in table if value >= lowest)


def lace_band(total: int) -> LaceBand:
    """0-4 low, 5-9 moderate, 10 and above high."""
    if total >= 10:
        return "high"
    return "moderate" if total >= 5 else "low"


@dataclass(frozen=True)
class Lace:
    """A LACE index with its parts (``l``, ``a``, ``c``, ``e`` are the points for each letter)."""

    length_of_stay_days: int
    l: int  # noqa: E741 - the letter of the index
    a: int
    c: int
    e: int
    charlson: int
    ed_visits_6m: int
    total: int
    band: LaceBand

    def as_dict(self) -> dict[str, int | str]:
        """The fields by name, for JSON storage."""
        return dataclasses.asdict(self)


def length_of_stay_days(admitted_at: datetime, discharged_at: datetime) -> int:
    """Calendar days between the admission date and the discharge date.

    When both are timezone-aware the discharge is first expressed in the admission's zone so
    both dates are read on the same calendar.
    """
    if admitted_at.tzinfo is not None and discharged_at.tzinfo is not None:
        discharged_at = discharged_at.astimezone(admitted_at.tzinfo)
    return (discharged_at.date() - admitted_at.date()).days


def lace(
    admitted_at: datetime,
    discharged_at: datetime,
    emergent: bool,
    diagnosis_codes: Iterable[str],
    ed_visits_6m: int,
) -> Lace:
    """The LACE index at discharge.

    Args:
        admitted_at: admission time (PV1-44).
        discharged_at: discharge time (PV1-45).
        emergent: an acute (emergent) admission, e.g. PV1-4 admission type ``E``.
        diagnosis_codes: ICD-10(-CM) codes of the stay (DG1-3), dotted or not.
        ed_visits_6m: emergency department visits in the six months before admission.

    Raises:
        ValueError: discharge before admission, or a negative ED visit count.
        TypeError: one time is timezone-aware and the other is not.
    """
    if discharged_at < admitted_at:
        raise ValueError("discharge precedes admission")
    if ed_visits_6m < 0:
        raise ValueError("ed_visits_6m must not be negative")
    days = length_of_stay_days(admitted_at, discharged_at)
    charlson = charlson_score(diagnosis_codes)
    length_points = _points(days, _L_POINTS)
    acuity_points = ACUTE_ADMISSION_POINTS if emergent else 0
    comorbidity_points = _points(charlson, _C_POINTS)
    ed_points = _points(ed_visits_6m, _E_POINTS)
    total = length_points + acuity_points + comorbidity_points + ed_points
    return Lace(
        length_of_stay_days=days,
        l=length_points,
        a=acuity_points,
        c=comorbidity_points,
        e=ed_points,
        charlson=charlson,
        ed_visits_6m=ed_visits_6m,
        total=total,
        band=lace_band(total),
    )


def lace_or_none(
    admitted_at: datetime | None,
    discharged_at: datetime | None,
    emergent: bool,
    diagnosis_codes: Iterable[str],
    ed_visits_6m: int,
) -> Lace | None:
    """:func:`lace`, or None when a time is missing or the discharge precedes the admission.

    Raises:
        ValueError: a negative ED visit count.
        TypeError: one time is timezone-aware and the other is not.
    """
    if admitted_at is None or discharged_at is None or discharged_at < admitted_at:
        return None
    return lace(admitted_at, discharged_at, emergent, diagnosis_codes, ed_visits_6m)
