"""Interpreter settings for the long-running processes (listener and worker).

Garbage collector:

CPython's default thresholds (700, 10, 10) start a young collection every 700 container
allocations; a busy worker allocates millions per second (events, models, rows) that reference
counting frees anyway, and every older collection walks the whole heap, the stream framework's
included. Measured on the worker's hot path (``bench/e2e --profile`` code, 20,200 messages):
normalising went from 0.44 to 0.28 ms per message and decoding an ``AdtEvent`` from 0.20 to
0.06 ms. Cycles are still collected, only less often.
"""

from __future__ import annotations

import gc
import os
import sys

YOUNG = 50_000  # allocations between young collections (default 700)
MIDDLE = 10  # young collections per middle collection (the default)
OLD = 10  # middle collections per full collection (the default): with 100, cyclic garbage
# waited about 3 million messages for a full collection and the listener's RSS grew
# 1 MB per 50,000 messages in the soak; with 10 it stays flat
# Thread switch interval. The database runs on its own thread, which gives up the GIL in every
# driver call and then waits for the event-loop thread to hand it back: up to the interval
# (default 5 ms) per call, thousands of calls per batch.
SWITCH_INTERVAL_S = 0.0005


def tune_process() -> None:
    """Freeze what start-up allocated (imports, the app: never collected, never walked
    again), raise the collector's thresholds and shorten the switch interval. Call once,
    after start-up, before the work begins."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def lower_priority(increment: int) -> int:
    """Lower this process's CPU priority by ``increment`` (``nice``; 0 leaves it) and return
    the niceness it now has. The stream workers call it so that, on a machine they share
    with the listener, the listener's ACKs never wait for a processing batch. On Linux the
    niceness belongs to the calling thread and the threads it starts afterwards: call it
    before the process starts any thread (the worker does, before faust starts)."""
    return os.nice(increment) if increment > 0 else os.nice(0)
