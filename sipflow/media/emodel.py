"""The ITU-T G.107 E-model (06/2015): transmission rating R and MOS, with every term shown.

Owns one pure function, ``rate``: the E-model's formulas (G.107 §7) from its inputs (codec impairment
Ie and packet-loss robustness Bpl, packet loss, burst ratio, one-way delay, and the G.107 defaults for
everything a capture cannot see: loudness ratings, sidetone, room noise, echo loss), returning each
term so a report can show where a MOS came from. Also the codec table (G.113 Appendix I provisional
values) that gives Ie and Bpl, and says where each came from. Narrowband only: G.711, G.729(A),
G.723.1; a wideband codec (G.722, Opus, AMR-WB) is rated on the G.107.1 scale, which this module does
not implement, so it is left unrated rather than rated on the wrong scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

# (Ie, Bpl, where they come from), by codec name as SDP writes it (upper case).
CODECS: Mapping[str, Tuple[float, float, str]] = {
    "PCMU": (0.0, 25.1, "G.113 App. I: G.711 with packet loss concealment (G.711 App. I)"),
    "PCMA": (0.0, 25.1, "G.113 App. I: G.711 with packet loss concealment (G.711 App. I)"),
    "G729": (11.0, 19.0, "G.113 App. I: G.729A + VAD"),
    "G723": (15.0, 16.1, "G.113 App. I: G.723.1 at 6.3 kbit/s + VAD"),
}
WIDEBAND = frozenset(("G722", "OPUS", "AMR-WB", "G7221", "SILK", "SPEEX"))
MIN_PACKETS = 100     # fewer packets than this (2 s of 20 ms audio) are too few to judge


@dataclass(frozen=True)
class Rating:
    """An E-model rating and every term that went into it (G.107 §7 names)."""
    ro: float          # basic signal-to-noise ratio
    is_: float         # simultaneous impairments (loudness, sidetone, quantizing)
    id_: float         # delay impairments: Idte + Idle + Idd
    idd: float         # the part due to absolute one-way delay alone
    ie: float          # codec impairment
    bpl: float         # codec robustness to packet loss
    ppl: float         # packet loss, percent
    burst_r: float     # burst ratio (1: random loss; above 1: bursty)
    ie_eff: float      # effective equipment impairment: Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl)
    delay_ms: Optional[float]   # one-way delay counted (None: not known, counted as 0)
    r: float
    mos: float         # G.107 Annex B: MOS_CQE from R


def mos_from_r(r: float) -> float:
    """G.107 Annex B (B-4): the conversational MOS estimate from R."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6


def rate(ie: float, bpl: float, ppl: float, burst_r: float = 1.0, delay_ms: Optional[float] = None, *,
         slr: float = 8.0, rlr: float = 2.0, stmr: float = 15.0, lstr: float = 18.0, ds: float = 3.0,
         telr: float = 65.0, wepl: float = 110.0, qdu: float = 1.0, a: float = 0.0, nc: float = -70.0,
         nfor: float = -64.0, ps: float = 35.0, pr: float = 35.0) -> Rating:
    """R and MOS by G.107's formulas. ``delay_ms`` is the mean one-way delay (T = Ta, Tr = 2T); the
    keyword arguments are G.107 Table 3's default values, which a capture cannot measure."""
    t = delay_ms or 0.0
    olr = slr + rlr
    # §7.2 basic signal-to-noise ratio
    nos = ps - slr - ds - 100.0 + 0.004 * (ps - olr - ds - 14.0) ** 2
    pre = pr + 10.0 * math.log10(1.0 + 10.0 ** ((10.0 - lstr) / 10.0))
    nor = rlr - 121.0 + pre + 0.008 * (pre - 35.0) ** 2
    nfo = nfor + rlr
    no = 10.0 * math.log10(10.0 ** (nc / 10.0) + 10.0 ** (nos / 10.0) + 10.0 ** (nor / 10.0) + 10.0 ** (nfo / 10.0))
    ro = 15.0 - 1.5 * (slr + no)
    # §7.3 simultaneous impairments
    xolr = olr + 0.2 * (64.0 + no - rlr)
    iolr = 20.0 * ((1.0 + (xolr / 8.0) ** 8) ** (1.0 / 8.0) - xolr / 8.0)
    stmro = -10.0 * math.log10(10.0 ** (-stmr / 10.0) + math.exp(-t / 4.0) * 10.0 ** (-telr / 10.0))
    ist = (12.0 * (1.0 + ((stmro - 13.0) / 6.0) ** 8) ** (1.0 / 8.0)
           - 28.0 * (1.0 + ((stmro + 1.0) / 19.4) ** 35) ** (1.0 / 35.0)
           - 13.0 * (1.0 + ((stmro - 3.0) / 33.0) ** 13) ** (1.0 / 13.0) + 29.0)
    q = 37.0 - 15.0 * math.log10(qdu)
    g = 1.07 + 0.258 * q + 0.0602 * q * q
    y = (ro - 100.0) / 15.0 + 46.0 / 8.4 - g / 9.0
    z = 46.0 / 30.0 - g / 40.0
    iq = 15.0 * math.log10(1.0 + 10.0 ** y + 10.0 ** z)
    is_ = iolr + ist + iq
    # §7.4 delay impairments: talker echo, listener echo (Tr = 2T), absolute delay
    terv = telr - 40.0 * math.log10((1.0 + t / 10.0) / (1.0 + t / 150.0)) + 6.0 * math.exp(-0.3 * t * t)
    roe = -1.5 * (no - rlr)
    re = 80.0 + 2.5 * (terv - 14.0)
    idte = ((roe - re) / 2.0 + math.sqrt((roe - re) ** 2 / 4.0 + 100.0) - 1.0) * (1.0 - math.exp(-t))
    rle = 10.5 * (wepl + 7.0) * (2.0 * t + 1.0) ** -0.25
    idle = (ro - rle) / 2.0 + math.sqrt((ro - rle) ** 2 / 4.0 + 169.0)
    if t <= 100.0:
        idd = 0.0
    else:
        x = math.log10(t / 100.0) / math.log10(2.0)
        idd = 25.0 * ((1.0 + x ** 6) ** (1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0) ** 6) ** (1.0 / 6.0) + 2.0)
    id_ = idte + idle + idd
    # §7.5 equipment impairment under packet loss
    ppl = min(max(ppl, 0.0), 100.0)
    burst_r = max(burst_r, 1.0) if ppl else 1.0
    ie_eff = ie + (95.0 - ie) * ppl / (ppl / burst_r + bpl) if ppl else ie
    r = ro - is_ - id_ - ie_eff + a
    return Rating(ro, is_, id_, idd, ie, bpl, ppl, burst_r, ie_eff, delay_ms, r, mos_from_r(r))


def burst_ratio(lost: int, expected: int, loss_events: int) -> float:
    """G.107's BurstR from a stream's counts: the mean length of its loss bursts over the mean length
    random loss of the same rate would give, 1 / (1 - p). 1 when there is no loss."""
    if lost <= 0 or expected <= 0 or loss_events <= 0:
        return 1.0
    p = min(lost / expected, 0.999)
    return max(1.0, (lost / loss_events) * (1.0 - p))


def judge(codec: Optional[str], kind: Optional[str], expected: int, lost: int, loss_events: int,
          delay_ms: Optional[float] = None, late: int = 0) -> Tuple[Optional[Rating], str]:
    """A stream's rating from what a capture shows (loss, its bursts, the codec), or None, and a note
    that says what was left out or why there is no rating. ``delay_ms``: the one-way network delay,
    which a capture shows only through RTCP round trips (half of one); None: delay not counted.
    ``late``: packets a simulated jitter buffer would discard, counted as lost (G.107's Ppl is the loss
    the decoder sees, network and jitter buffer together)."""
    name = (codec or "").upper()
    if kind == "video":
        return None, "video: the E-model rates speech only"
    if name == "TELEPHONE-EVENT":
        return None, "DTMF events: not speech"
    if name in WIDEBAND:
        return None, f"{codec}: wideband, rated on the G.107.1 scale, which sipflow does not implement"
    values = CODECS.get(name)
    if values is None:
        return None, f"{codec or 'unknown codec'}: no G.113 Ie/Bpl values known"
    if expected < MIN_PACKETS:
        return None, f"{expected} packets: too few to judge (fewer than {MIN_PACKETS})"
    ie, bpl, source = values
    ppl = 100.0 * (max(lost, 0) + late) / expected
    delay = (f"delay {delay_ms:.1f} ms (half the RTCP round trip; network only)" if delay_ms is not None
             else "delay not counted (no RTCP round trip)")
    buffer = (f"loss {max(lost, 0)} in the network + {late} late for an adaptive jitter buffer" if late
              else "no packet late for an adaptive jitter buffer")
    return (rate(ie, bpl, ppl, burst_ratio(lost, expected, loss_events), delay_ms),
            f"Ie {ie:g}, Bpl {bpl:g} ({source}); {buffer}; {delay}")
