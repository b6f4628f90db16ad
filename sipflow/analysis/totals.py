"""Calls summarised out of memory: what stays of a call after its records are dropped.

Owns ``CallTotals`` (the accumulator: one row of small numbers per summarised call, in arrays) and
``SummarisedCalls`` (its frozen copy in a snapshot). Every total and KPI adds these rows to the calls
still held, so ``keep_calls`` changes what is listed, never what is counted.
"""
from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

from sipflow.analysis.kinds import Outcome

TIMINGS = ("time_to_first_response", "pdd", "time_to_answer", "setup_time", "duration")
_OUTCOMES = list(Outcome)


def _arrays() -> Tuple[array, array, array, Dict[str, array]]:
    return array("b"), array("h"), array("b"), {t: array("d") for t in TIMINGS}


class CallTotals:
    """One row per summarised call: outcome, final status, whether the INVITE was seen, timings."""

    def __init__(self) -> None:
        self.outcome, self.status, self.initial, self.timing = _arrays()
        self.messages = 0

    def add(self, outcome: Outcome, final_status: Optional[int], saw_initial: bool,
            timings: Dict[str, Optional[float]], messages: int) -> None:
        self.outcome.append(_OUTCOMES.index(outcome))
        self.status.append(final_status if final_status is not None else -1)
        self.initial.append(1 if saw_initial else 0)
        for t in TIMINGS:
            v = timings.get(t)
            self.timing[t].append(math.nan if v is None else v)
        self.messages += messages

    def __len__(self) -> int:
        return len(self.outcome)

    def freeze(self) -> "SummarisedCalls":
        return SummarisedCalls(array("b", self.outcome), array("h", self.status), array("b", self.initial),
                               {t: array("d", a) for t, a in self.timing.items()}, self.messages)


@dataclass(frozen=True)
class SummarisedCalls:
    """The summarised calls of one snapshot (copies: later summaries do not show up here)."""
    outcome: array
    status: array
    initial: array
    timing: Dict[str, array]
    messages: int = 0

    @classmethod
    def empty(cls) -> "SummarisedCalls":
        return cls(*_arrays())

    def __len__(self) -> int:
        return len(self.outcome)

    def rows(self) -> Iterator[Tuple[Outcome, Optional[int], bool, Dict[str, Optional[float]]]]:
        """(outcome, final status, INVITE seen, timings) per summarised call."""
        for i in range(len(self.outcome)):
            st = self.status[i]
            yield (_OUTCOMES[self.outcome[i]], st if st >= 0 else None, bool(self.initial[i]),
                   {t: (None if math.isnan(a[i]) else a[i]) for t, a in self.timing.items()})
