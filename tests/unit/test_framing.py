"""MLLP framing (<VT> payload <FS><CR>): bytes in, framing events out; no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adt_listener.hl7.framing import (
    END_BLOCK,
    START_BLOCK,
    Frame,
    FrameTooLarge,
    FramingEvent,
    JunkDiscarded,
    MllpDecoder,
    wrap,
)

ADT_A01 = (
    b"MSH|^~\\&|HIS|WARD|TC|TC|20240101120000||ADT^A01^ADT_A01|MSG0001|P|2.5\r"
    b"EVN|A01|20240101120000\r"
    b"PID|1||123456^^^HOSP^MR||Doe^John\r"
    b"PV1|1|I|W1^101^1\r"
)
ADT_A03 = ADT_A01.replace(b"A01", b"A03").replace(b"MSG0001", b"MSG0002")


def feed_in_chunks(decoder: MllpDecoder, data: bytes, size: int) -> list[FramingEvent]:
    events: list[FramingEvent] = []
    for i in range(0, len(data), size):
        events += decoder.feed(data[i : i + size])
    return events


def payloads(events: list[FramingEvent]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, Frame)]


def test_wrap_adds_start_block_and_trailer() -> None:
    assert wrap(b"MSH|x") == b"\x0bMSH|x\x1c\r"


def test_one_frame() -> None:
    assert MllpDecoder().feed(wrap(ADT_A01)) == [Frame(ADT_A01)]


def test_one_frame_fed_byte_by_byte() -> None:
    decoder = MllpDecoder()
    events = feed_in_chunks(decoder, wrap(ADT_A01), 1)
    assert events == [Frame(ADT_A01)]
    assert not decoder.in_frame
    assert decoder.buffered == 0


@pytest.mark.parametrize("size", range(1, 18))
def test_two_frames_fed_in_every_chunk_size(size: int) -> None:
    events = feed_in_chunks(MllpDecoder(), wrap(ADT_A01) + wrap(ADT_A03), size)
    assert events == [Frame(ADT_A01), Frame(ADT_A03)]


def test_several_frames_in_one_read() -> None:
    data = wrap(ADT_A01) + wrap(b"") + wrap(ADT_A03)
    assert MllpDecoder().feed(data) == [Frame(ADT_A01), Frame(b""), Frame(ADT_A03)]


@pytest.mark.parametrize(
    "noise",
    [b"\n", b"\x00", b"   ", b"\r\n", b"\t\r\n\x00 "],
    ids=["LF", "NUL", "spaces", "CRLF", "mixed"],
)
def test_whitespace_before_and_between_frames_is_silent(noise: bytes) -> None:
    data = noise + wrap(ADT_A01) + noise + wrap(ADT_A03) + noise
    for size in (1, 3, len(data)):
        assert feed_in_chunks(MllpDecoder(), data, size) == [Frame(ADT_A01), Frame(ADT_A03)]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GET / HTTP/1.0" + wrap(ADT_A01), [JunkDiscarded(14), Frame(ADT_A01)]),
        (wrap(ADT_A01) + b"xx\n" + wrap(ADT_A03),
         [Frame(ADT_A01), JunkDiscarded(3), Frame(ADT_A03)]),
        # An end block with no open frame is junk too.
        (END_BLOCK + b"\r" + wrap(ADT_A01), [JunkDiscarded(2), Frame(ADT_A01)]),
        (b"trailing junk", [JunkDiscarded(13)]),
    ],
    ids=["before", "between", "stray-end-block", "only-junk"],
)
def test_junk_outside_frames_is_reported(data: bytes, expected: list[FramingEvent]) -> None:
    assert MllpDecoder().feed(data) == expected


@pytest.mark.parametrize("size", [1, 2, 5, 1000])
def test_missing_cr_after_end_block(size: int) -> None:
    data = START_BLOCK + ADT_A01 + END_BLOCK + START_BLOCK + ADT_A03 + END_BLOCK
    decoder = MllpDecoder()
    assert feed_in_chunks(decoder, data, size) == [Frame(ADT_A01), Frame(ADT_A03)]
    assert not decoder.in_frame


def test_in_frame_is_true_mid_frame_only() -> None:
    decoder = MllpDecoder()
    assert not decoder.in_frame
    framed = wrap(ADT_A01)
    assert decoder.feed(framed[:20]) == []
    assert decoder.in_frame
    assert decoder.feed(framed[20:-1]) == [Frame(ADT_A01)]  # <FS> ends the frame
    assert not decoder.in_frame
    assert decoder.feed(framed[-1:]) == []  # the trailing CR is silent


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000, 10_000])
def test_oversize_frame_is_reported_once_with_bounded_buffer(chunk: int) -> None:
    max_frame = 100
    oversize = b"X" * (10 * max_frame)
    decoder = MllpDecoder(max_frame=max_frame)
    events: list[FramingEvent] = []
    data = wrap(oversize)
    for i in range(0, len(data), chunk):
        events += decoder.feed(data[i : i + chunk])
        assert decoder.buffered <= max_frame
    # The first bytes are kept (bounded) so the reject can echo the MSH.
    assert events == [FrameTooLarge(len(oversize), oversize[: MllpDecoder.HEAD_BYTES])]
    assert not decoder.in_frame
    assert decoder.buffered == 0
    # The decoder recovers: the next normal frame still decodes.
    small = b"MSH|^~\\&|A"
    assert decoder.feed(wrap(small)) == [Frame(small)]


@pytest.mark.parametrize(
    ("size", "expected"),
    [(100, Frame(b"Y" * 100)), (101, FrameTooLarge(101, b"Y" * 101))],
    ids=["at-limit", "one-over"],
)
def test_max_frame_boundary(size: int, expected: FramingEvent) -> None:
    assert MllpDecoder(max_frame=100).feed(wrap(b"Y" * size)) == [expected]


# Payloads may hold anything but the end block (CR, LF, even <VT>).
_payload = st.binary(max_size=200).map(lambda b: b.replace(END_BLOCK, b""))


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(_payload, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=20),
)
def test_any_split_yields_the_same_payloads(frames: list[bytes], cuts: list[int]) -> None:
    data = b"".join(wrap(p) for p in frames)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    decoder = MllpDecoder()
    events: list[FramingEvent] = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        events += decoder.feed(data[lo:hi])
    assert events == [Frame(p) for p in frames]
    assert not decoder.in_frame
