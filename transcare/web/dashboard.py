"""The ops page at ``/``: the last minute's messages a second by facility, ACK codes, dead
letters and latencies (:mod:`transcare.web.live`); message counts, relay backlog, open
episodes, match reviews, follow-up work and the latest rejects and dead letters.

Metadata only (facility, control id, type, reason): no PHI. It refreshes itself every 5 s.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from html import escape
from typing import Any

from adt_listener.store import StoredMessage
from transcare.web.live import Live

_STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;color:#1d2733;background:#f6f8fa}
h1{font-size:20px;margin:0 0 16px} h2{font-size:15px;margin:24px 0 8px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:12px 16px;min-width:130px}
.card b{display:block;font-size:24px} .card span{color:#57606a}
.bad b{color:#b42318} table{border-collapse:collapse;background:#fff;width:100%}
td,th{border:1px solid #d8dee4;padding:6px 8px;text-align:left;font-size:13px}
td:nth-child(2){white-space:nowrap}
th{background:#eef1f4} a{color:#0b5cad} .note{color:#57606a}
table.rates{width:auto;min-width:320px;margin:12px 0} .cards+.cards{margin-top:12px}
"""


def _card(label: str, value: int, bad: bool = False) -> str:
    cls = "card bad" if bad and value else "card"
    return f'<div class="{cls}"><b>{value}</b><span>{escape(label)}</span></div>'


def _printable(text: str) -> str:
    """Control characters (from a header that could not be decoded) shown as U+FFFD."""
    return "".join("\ufffd" if unicodedata.category(c) == "Cc" else c for c in text)


def _row(m: StoredMessage) -> str:
    cells = [str(m.id), m.received_at.strftime("%Y-%m-%d %H:%M:%S"), m.sending_facility,
             m.control_id or "", m.message_type, m.ack_code, m.status, m.reason or ""]
    return "<tr>" + "".join(f"<td>{escape(_printable(c))}</td>" for c in cells) + "</tr>"


def _episode_cards(stats: dict[str, Any] | None) -> str:
    if stats is None:
        return ""
    opened = stats["open_episodes"]
    cards = "".join([
        _card("open ED visits", opened.get("ed", 0)),
        _card("open inpatient stays", opened.get("inpatient", 0)),
        _card("open observation stays", opened.get("observation", 0)),
        _card("open post-acute stays", opened.get("post_acute", 0)),
        _card("match reviews pending", stats["reviews_pending"], bad=True),
        _card("episode events unpublished", stats["outbox_backlog"], bad=stats["outbox_backlog"] > 1000),
        _card("members enrolled", stats["enrolled"]),
    ])
    html = f'<h2>Transition episodes</h2><div class="cards">{cards}</div>'
    return html + _task_cards(stats)


def _task_cards(stats: dict[str, Any]) -> str:
    if "tasks" not in stats:
        return ""
    tasks, notes = stats["tasks"], stats["notifications"]
    unconfigured = stats.get("unconfigured_channels", ())
    failed = sum(n for (channel, status), n in notes.items()
                 if status in ("failed", "dead") and channel not in unconfigured)
    cards = [
        _card("tasks open", tasks.get("open", 0)),
        _card("tasks claimed", tasks.get("claimed", 0)),
        _card("tasks overdue", tasks.get("overdue", 0), bad=True),
        _card("tasks escalated", tasks.get("escalated", 0), bad=True),
        _card("deliveries failing", failed, bad=True),
    ]
    # A channel nobody configured is not a failure: its notifications wait for it (the
    # in-app inbox has them all the same).
    for channel in unconfigured:
        waiting = sum(n for (c, status), n in notes.items()
                      if c == channel and status in ("pending", "failed"))
        if waiting:
            cards.append(_card(f"{_CHANNELS[channel]} not configured: waiting "
                               f"(set {_SETTING[channel]})", waiting))
    return f'<h2>Follow-up work</h2><div class="cards">{"".join(cards)}</div>'


_CHANNELS = {"email": "e-mail", "webhook": "webhooks"}
_SETTING = {"email": "TRANSCARE_SMTP_HOST", "webhook": "TRANSCARE_WEBHOOK_SECRET"}


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f} ms"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:,.2f} s"


def _text_card(label: str, value: str, bad: bool = False) -> str:
    cls = "card bad" if bad else "card"
    return f'<div class="{cls}"><b>{escape(value)}</b><span>{escape(label)}</span></div>'


def _live_section(live: Live | None, shared: bool = True) -> str:
    if not shared:
        return ('<h2>Live</h2><p class="note">not available: this web process does not see the '
                "listener's and workers' metrics (give them one PROMETHEUS_MULTIPROC_DIR, as "
                '<code>transcare up</code> does; otherwise read each process\'s /metrics)</p>')
    if live is None:
        return ('<h2>Live</h2><p class="note">measuring: the first figures of the last minute '
                'show on the next refresh</p>')
    span = f"last {live.seconds:.0f} s"
    acks = live.acks
    codes = ["AA", "AE", "AR", *sorted(set(acks) - {"AA", "AE", "AR"})]  # CA, CE, CR: enhanced mode
    cards = "".join([
        _text_card("messages a second", f"{live.rate:,.1f}"),
        *(_text_card(f"ACK {code}", f"{acks.get(code, 0):,}",
                     bad=code[1] in "ER" and acks.get(code, 0) > 0) for code in codes),
        _text_card("dead letters", f"{live.deadletters:,}", bad=live.deadletters > 0),
        _text_card("ACK latency p50 / p99", f"{_ms(live.ack_p50)} / {_ms(live.ack_p99)}"),
        _text_card("MLLP in to episode p50 / p99", f"{_s(live.episode_p50)} / {_s(live.episode_p99)}",
                   bad=(live.episode_p99 or 0.0) > LAG_ALERT_S),
    ])
    rows = "".join(f"<tr><td>{escape(_printable(f) or '(none)')}</td><td>{r:,.2f}</td></tr>"
                   for f, r in sorted(live.rates.items(), key=lambda fr: -fr[1])) or (
        '<tr><td colspan="2">no messages</td></tr>')
    return (f'<h2>Live ({span})</h2><div class="cards">{cards}</div>'
            f'<table class="rates"><tr><th>sending facility (MSH-4)</th><th>messages a second'
            f'</th></tr>{rows}</table>')


def _lag_cards(lags: dict[str, int | None]) -> str:
    """Each stage's consumer lag as the broker last told it ("-": no reading)."""
    return "".join(
        _text_card(f"consumer lag: {name}", "-" if lags.get(stage) is None else f"{lags[stage]:,}",
                   bad=(lags.get(stage) or 0) >= LAG_ALERT_RECORDS)
        for stage, name in (("normaliser", "normaliser"), ("transitions", "transitions"),
                            ("followup", "follow-up")))


LAG_ALERT_S = 10  # the in-flight age shown in red from here (the lag target is 1 s)
LAG_ALERT_RECORDS = 1000  # a stage's consumer lag shown in red from here


def render_dashboard(counts: dict[str, int], backlog: int,
                     problems: Sequence[StoredMessage], stats: dict[str, Any] | None = None,
                     live: Live | None = None, live_shared: bool = True) -> str:
    lag = round((stats or {}).get("oldest_in_flight_s", 0.0))
    cards = "".join([
        _card("processed", counts.get("processed", 0)),
        _card("accepted, in flight", counts.get("accepted", 0)),
        _card("oldest in flight (s)", lag, bad=lag >= LAG_ALERT_S),
        _card("relay backlog", backlog, bad=backlog > 1000),
        _card("rejected (AE/AR)", counts.get("rejected", 0), bad=True),
        _card("dead letters", counts.get("deadlettered", 0), bad=True),
    ])
    rows = "".join(_row(m) for m in sorted(problems, key=lambda m: -m.id)) or (
        '<tr><td colspan="8">none</td></tr>')
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5"><title>transcare ops</title><style>{_STYLE}</style></head>
<body><h1>transcare &middot; ADT stream</h1>{_live_section(live, live_shared)}
<div class="cards">{_lag_cards((stats or {}).get("consumer_lag") or {})}</div>
<h2>Message store</h2><div class="cards">{cards}</div>
{_episode_cards(stats)}
<h2>Latest rejects and dead letters</h2>
<table><tr><th>id</th><th>received (UTC)</th><th>facility</th><th>control id</th><th>type</th>
<th>ACK</th><th>status</th><th>reason</th></tr>{rows}</table>
<p><a href="/inbox">coordinator inbox</a>
&middot; <a href="/metrics">Prometheus metrics</a> &middot; <a href="/api/messages">messages API</a>
&middot; <a href="/api/episodes">episodes API</a> &middot; <a href="/api/match-reviews">match reviews</a>
&middot; <a href="/docs">API docs</a> &middot; <a href="/readyz">readiness</a></p></body></html>"""
