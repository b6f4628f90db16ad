"""What the analyzer may forget: the options that keep memory flat on endless input.

Owns ``AnalyzerOptions``, passed to the ``Analyzer`` (no globals). For a file the defaults keep
everything; a live capture that runs for days sets ``keep_calls`` and ``idle_timeout``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

LINGER = 32.0   # seconds (64 x T1, RFC 3261 Timers D and J) a finished transaction or call waits for strays


@dataclass(frozen=True)
class AnalyzerOptions:
    # Completed calls beyond this many most recent ones are summarised: their outcome, status and
    # timings stay in every total and KPI, their message records are dropped. Other messages
    # (REGISTER, OPTIONS, ...) keep their records for the most recent ``keep_calls x 8``, and each
    # registration its last 8. None: keep everything.
    keep_calls: Optional[int] = None
    # A call or transaction with no message for this long (capture seconds) that never ended is aged
    # out: reported as an anomaly (aged_out), its transactions forgotten, the call then summarised like
    # a completed one. None: wait for ever.
    idle_timeout: Optional[float] = None
    # Where SIP messages come from: "native" (sipflow's own decoder, and any upper-PDU records such as
    # the TLS that tshark decrypted), or "tshark": only upper-PDU records (``--engine tshark`` exports
    # every SIP message through Wireshark's dissectors); SIP the native decoder finds is then counted
    # (sip_left_to_tshark) and not read twice. RTP, RTCP and T.38 are always sipflow's own.
    sip_from: str = "native"

    def __post_init__(self) -> None:
        if self.keep_calls is not None and self.keep_calls < 0:
            raise ValueError("keep_calls must be 0 or more")
        if self.idle_timeout is not None and self.idle_timeout <= 0:
            raise ValueError("idle_timeout must be more than 0 seconds")
        if self.sip_from not in ("native", "tshark"):
            raise ValueError("sip_from must be native or tshark")

    @property
    def bounded(self) -> bool:
        return self.keep_calls is not None
