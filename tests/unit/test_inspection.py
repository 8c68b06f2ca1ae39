"""inspect(): every rule of the inspection docstring (AR/AE, where, why), then the public corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from adt_listener.inspection import inspect

CORPUS = Path(__file__).parents[2].parent / "shared" / "corpus"

MSH = "MSH|^~\\&|HIS|WARD|TC|HUB|{ts}||{type}|{cid}|{pid}|{ver}|||{acc}|{app}||{cs}"
EVN = "EVN|A01|20240101120000"
PID = "PID|1||123^^^HOSP^MR||DOE^JOHN"


def adt(*body: str, ts: str = "20240101120000", type: str = "ADT^A01^ADT_A01",
        cid: str = "C1", pid: str = "P", ver: str = "2.5", acc: str = "", app: str = "",
        cs: str = "") -> bytes:
    """An ADT message: the MSH built from the arguments, then ``body`` (default EVN and PID)."""
    msh = MSH.format(ts=ts, type=type, cid=cid, pid=pid, ver=ver, acc=acc, app=app, cs=cs)
    segments = [msh, *(body or (EVN, PID))]
    return ("\r".join(segments) + "\r").encode("latin-1")


def case(raw: bytes, code: str, segment: str, field: int | None, names: str | None = None,
         *, id: str, marks: object = ()) -> object:
    return pytest.param(raw, code, segment, field, names, id=id, marks=marks)


RULES = [
    # -- AR: unreadable bytes (MSH-18, HL7 table 0211) ----------------------------------------
    case(adt(EVN, PID, "NTE|\xe9", cs="UNICODE UTF-8").replace(b"\xe9", b"\xff"), "AR",
         "MSH", 18, id="bytes-invalid-for-declared-utf8"),
    case(adt(EVN, PID, "NTE|\xe9", cs="ASCII"), "AR", "MSH", 18,
         id="bytes-invalid-for-declared-ascii"),
    case(adt(EVN, PID, "NTE|\xff"), "AR", "MSH", 18, id="bytes-invalid-no-msh18"),
    case(adt(cs="KLINGON"), "AR", "MSH", 18, id="msh18-unsupported"),
    # -- AR: unreadable MSH (MSH-1, MSH-2) and segment names ----------------------------------
    case(b"", "AR", "MSH", None, "MSH", id="empty"),
    case(b"PID|1||123\rMSH|^~\\&|HIS\r", "AR", "MSH", None, "MSH", id="no-msh-first"),
    case(b"MSHA^~\\&AHIS\r", "AR", "MSH", 1, id="msh1-alphanumeric"),
    case(b"MSH|^~&|HIS|WARD\r", "AR", "MSH", 2, id="msh2-three-characters"),
    case(b"MSH|^~\\&&#|HIS|WARD\r", "AR", "MSH", 2, id="msh2-six-characters"),
    case(b"MSH|^~\\^|HIS|WARD\r", "AR", "MSH", 2, id="msh2-repeated-character"),
    case(b"MSH|^~\\&\rPID|1\r", "AR", "MSH", 2, id="msh2-not-followed-by-field"),
    case(adt(EVN, "pid|1||123"), "AR", "?", None, "segment 3", id="segment-name-lowercase"),
    case(adt(EVN, "PI|1||123"), "AR", "?", None, "segment 3", id="segment-name-short"),
    # -- AR: MSH-9 --------------------------------------------------------------------------
    case(adt(type=""), "AR", "MSH", 9, id="msh9-empty"),
    case(adt(type="^A01"), "AR", "MSH", 9, id="msh9-no-type"),
    case(adt(type="ADT"), "AR", "MSH", 9, id="msh9-no-trigger"),
    case(adt(type="ORU^R01"), "AR", "MSH", 9, id="msh9-not-adt"),
    case(adt(type="adt^A01"), "AR", "MSH", 9, id="msh9-lowercase-type"),
    # -- AR: MSH-12 and MSH-11 --------------------------------------------------------------
    case(adt(ver=""), "AR", "MSH", 12, id="msh12-missing"),
    case(adt(ver="3.0"), "AR", "MSH", 12, id="msh12-v3"),
    case(adt(ver="V2.5"), "AR", "MSH", 12, id="msh12-prefixed"),
    case(adt(ver="2"), "AR", "MSH", 12, id="msh12-no-minor"),
    case(adt(pid="X"), "AR", "MSH", 11, id="msh11-not-p-t-d"),
    # -- AE: MSH-7, MSH-10 ------------------------------------------------------------------
    case(adt(ts="2024-01-01"), "AE", "MSH", 7, id="msh7-iso-date"),
    case(adt(ts="20240101 1200"), "AE", "MSH", 7, id="msh7-space"),
    case(adt(ts="202401011200+01"), "AE", "MSH", 7, id="msh7-short-offset"),
    case(adt(cid=" C1"), "AE", "MSH", 10, id="msh10-leading-space"),
    case(adt(cid="C1  "), "AE", "MSH", 10, id="msh10-trailing-space"),
    # -- AE: EVN ----------------------------------------------------------------------------
    case(adt("EVN|A1", PID), "AE", "EVN", 1, id="evn1-two-characters"),
    case(adt("EVN|A01X", PID), "AE", "EVN", 1, id="evn1-four-characters"),
    case(adt("EVN|a01", PID), "AE", "EVN", 1, id="evn1-lowercase"),
    case(adt(EVN, EVN, PID), "AE", "EVN", None, id="evn-repeated"),
    # -- AE: no patient identifier (PID-3, MRG-1) -------------------------------------------
    case(adt(EVN), "AE", "PID", 3, id="no-pid"),
    case(adt(EVN, "PID|1||"), "AE", "PID", 3, id="pid3-empty"),
    case(adt(EVN, "PID|1||~"), "AE", "PID", 3, id="pid3-empty-repetitions"),
    case(adt(EVN, 'PID|1||""'), "AE", "PID", 3, id="pid3-explicit-null"),
    case(adt(EVN, "PID|1||^^^HOSP^MR"), "AE", "PID", 3, id="pid3-authority-only"),
    case(adt(EVN, "PID|1||", "MRG|"), "AE", "PID", 3, id="pid3-and-mrg1-empty"),
    # -- AE: batch header inside a message, glued segments ----------------------------------
    case(adt(EVN, "BHS|^~\\&", PID), "AE", "BHS", None, id="bhs-inside"),
    case(adt(EVN, "FHS|^~\\&", PID), "AE", "FHS", None, id="fhs-inside"),
    case(adt(EVN, "BTS|1", PID), "AE", "BTS", None, id="bts-before-last-segment"),
    case(adt(EVN, PID + " PV1|1|I"), "AE", "PV1", None, id="pv1-glued"),
    case(adt(EVN + " PID|1||123"), "AE", "PID", None, id="pid-glued"),
    case(adt(EVN, PID, "NK1|1|DOE^JANE ZPI|1"), "AE", "ZPI", None, id="zpi-glued"),
]


@pytest.mark.parametrize(("raw", "code", "segment", "field", "names"), RULES)
def test_rule(raw: bytes, code: str, segment: str, field: int | None,
              names: str | None) -> None:
    verdict = inspect(raw)
    assert verdict.code == code, verdict.error
    assert verdict.error is not None
    assert (verdict.error.location.segment, verdict.error.location.field) == (segment, field)
    expected = names or str(verdict.error.location)
    assert expected in verdict.error.reason


@pytest.mark.parametrize("raw", [
    pytest.param(adt(), id="plain"),
    pytest.param(adt(EVN, "PID|1||", "MRG|999^^^HOSP"), id="mrg1-only"),
    pytest.param(adt(EVN, "PID|1||~456^^^NHS"), id="second-pid3-repetition"),
    pytest.param(adt(PID), id="no-evn"),
    pytest.param(adt("EVN||20240101", PID), id="evn1-empty"),
    pytest.param(adt(ts=""), id="msh7-empty"),
    pytest.param(adt(ts="20110613122406637"), id="msh7-fraction-without-dot"),
    pytest.param(adt(ts="20240101120000.1234-0500"), id="msh7-fraction-and-offset"),
    pytest.param(adt(ts="2024"), id="msh7-year-only"),
    pytest.param(adt(ver="2.5.1"), id="msh12-three-part"),
    pytest.param(adt(ver="2.5^FRA^2.11"), id="msh12-composite"),
    pytest.param(adt(pid=""), id="msh11-empty"),
    pytest.param(adt(pid="T"), id="msh11-training"),
    pytest.param(adt(pid="D^T"), id="msh11-debug-with-mode"),
    pytest.param(adt(cid=""), id="msh10-empty"),
    pytest.param(adt(cs="8859/1").replace(b"DOE", b"D\xc9"), id="msh18-latin1"),
    pytest.param(b"\xef\xbb\xbf" + adt(), id="utf8-bom"),
    pytest.param(adt().replace(b"\r", b"\n"), id="lf-separators"),
    pytest.param(b"MSH#!@%*#HIS#WARD#TC#HUB#20240101##ADT!A01#C1#P#2.5\rPID#1##123\r",
                 id="custom-delimiters"),
    pytest.param(adt(EVN, PID, "ZPI|1|X"), id="z-segment"),
    pytest.param(adt(EVN, PID, "BTS|1"), id="trailing-bts"),
    pytest.param(adt(EVN, PID, "BTS|1", "FTS|1"), id="trailing-bts-fts"),
])
def test_accepted(raw: bytes) -> None:
    verdict = inspect(raw)
    assert (verdict.code, verdict.error) == ("AA", None)


def test_verdict_carries_what_the_ack_and_store_need() -> None:
    verdict = inspect(adt(cid="C42", acc="AL", app="NE", cs="UNICODE UTF-8"))
    assert (verdict.message_type, verdict.sending_facility, verdict.control_id) == (
        "ADT^A01", "WARD", "C42")
    assert verdict.patient_key == "123@HOSP"
    assert (verdict.accept_ack, verdict.application_ack, verdict.enhanced) == ("AL", "NE", True)
    h = verdict.header
    assert (h.sending_application, h.sending_facility, h.receiving_application,
            h.receiving_facility, h.trigger, h.control_id, h.version, h.character_set) == (
        "HIS", "WARD", "TC", "HUB", "A01", "C42", "2.5", "UNICODE UTF-8")


def test_header_problem_wins_over_missing_patient() -> None:
    verdict = inspect(adt(EVN, type="ORU^R01"))
    assert (verdict.code, str(verdict.error.location) if verdict.error else "") == ("AR",
                                                                                     "MSH-9")


# -- the public corpus ------------------------------------------------------------------------

MSGS_EXCEPTIONS = {
    "hapi__NewPipeParserTest__6.hl7":
        "A17 whose PID-3 fields are all empty: no patient identifier -> AE PID-3",
    "rethink__edge-empty-segments__1.hl7": "empty PID-3 -> AE PID-3",
}
BAD_EXCEPTIONS = {
    "hapi__DefaultValidationTest__1.hl7":
        "valid ADT^A04; upstream's expected failure was a phone-format rule the test itself "
        "disabled",
    "rethink__invalid-trailing-empty-fields__1.hl7":
        "trailing empty fields are legal HL7 (hapi__MessageValidation__1 in msgs/ has the same)",
}


def _is_batch(raw: bytes) -> bool:
    return raw.lstrip(b"\xef\xbb\xbf \r\n")[:3] in (b"FHS", b"BHS")


def corpus_params(folder: str) -> list[object]:
    """One param per non-batch file; a single failing param when the corpus is missing."""
    where = CORPUS / folder
    if not where.is_dir():
        return [pytest.param(where / "<missing>", id=f"{folder}-missing")]
    files = [p for p in sorted(where.glob("*.hl7")) if not _is_batch(p.read_bytes())]
    return [pytest.param(p, id=p.name) for p in files]


def read(path: Path) -> bytes:
    if not path.is_file():
        pytest.fail(f"the shared HL7 corpus is missing: expected {path.parent} (see "
                    "../shared/corpus/README.md)")
    return path.read_bytes()


def msh9_type(raw: bytes) -> str:
    """MSH-9.1 read with a plain split, independently of the reader under test."""
    text = raw.removeprefix(b"\xef\xbb\xbf").decode("latin-1")
    first = text.replace("\n", "\r").split("\r")[0]
    fields = first.split(first[3])
    return fields[8].split(first[4])[0] if len(fields) > 8 else ""


@pytest.mark.parametrize("path", corpus_params("msgs"))
def test_corpus_message_gets_aa_if_adt_else_ar(path: Path) -> None:
    raw = read(path)
    verdict = inspect(raw)
    if path.name in MSGS_EXCEPTIONS:
        assert verdict.code == "AE", MSGS_EXCEPTIONS[path.name]
        assert verdict.error is not None
        assert str(verdict.error.location) == "PID-3", MSGS_EXCEPTIONS[path.name]
        return
    expected = "AA" if msh9_type(raw) == "ADT" else "AR"
    assert verdict.code == expected, verdict.error
    if expected == "AR":
        assert verdict.error is not None
        assert str(verdict.error.location) == "MSH-9"


@pytest.mark.parametrize("path", corpus_params("bad"))
def test_corpus_bad_message_is_not_accepted(path: Path) -> None:
    verdict = inspect(read(path))
    if path.name in BAD_EXCEPTIONS:
        assert (verdict.code, verdict.error) == ("AA", None), BAD_EXCEPTIONS[path.name]
        return
    assert verdict.code in ("AE", "AR")
    assert verdict.error is not None
    assert verdict.error.reason


def test_corpus_exceptions_exist() -> None:
    for folder, names in (("msgs", MSGS_EXCEPTIONS), ("bad", BAD_EXCEPTIONS)):
        for name in names:
            assert (CORPUS / folder / name).is_file(), f"{folder}/{name} is gone from the corpus"


@pytest.mark.parametrize(
    ("raw", "code", "segment", "field"),
    [
        (adt(EVN, PID, cid="C" * 200), "AE", "MSH", 10),
        (adt(EVN, PID).replace(b"|WARD|", b"|" + b"F" * 181 + b"|", 1), "AR", "MSH", 4),
        (adt(EVN, "PID|1||" + "9" * 251 + "^^^HOSP"), "AE", "PID", 3),
    ],
    ids=["control-id", "facility", "patient-key"],
)
def test_values_longer_than_the_store_columns_are_refused(
        raw: bytes, code: str, segment: str, field: int) -> None:
    verdict = inspect(raw)
    assert verdict.code == code
    assert verdict.error is not None
    assert (verdict.error.location.segment, verdict.error.location.field) == (segment, field)
    assert "longer than" in verdict.error.reason
