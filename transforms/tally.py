"""A run's outcomes, tallied in bounded memory: counts, timing and a fixed-size sample.

A million pairs must not meet in one list on one worker. ``Tally`` counts every outcome and
keeps the figures (seconds, final loss, batch size) of at most SAMPLE_SIZE succeeded pairs:
those of lowest ``rank``, a hash of the id, so that the sample is the same whatever order the
runner visits pairs in and however it splits the work (tallies merge exactly). Up to
SAMPLE_SIZE pairs every figure is exact. ``ReportChoice`` picks the pairs the report shows the
same way: the first by id, the worst by final loss and a seeded random few hundred.

Results.py wires both into Beam combiners.

Imports: records only; no Beam, no torch, no storage.
"""

from __future__ import annotations

import hashlib
import heapq
import statistics
from dataclasses import dataclass, field
from typing import Final

from transforms.records import Outcome

# Succeeded pairs whose figures the summary's statistics and the report's distributions read.
SAMPLE_SIZE: Final = 10_000
# Pairs the report shows: the first by id, the worst by final loss, a random sample.
REPORT_FIRST: Final = 24
REPORT_WORST: Final = 24
REPORT_RANDOM: Final = 200


def rank(pair_id: str) -> int:
    """A pair's place in every sample: a hash of its id (the same on every worker and rerun)."""
    return int.from_bytes(hashlib.sha256(pair_id.encode()).digest()[:8], "big")


@dataclass(frozen=True)
class Figures:
    """One succeeded pair's figures."""

    rank: int
    id: str
    seconds: float
    final_loss: float | None
    batch_size: int


@dataclass
class Tally:
    """Counts of every outcome, and the figures of the SAMPLE_SIZE lowest-ranked successes."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(Outcome.STATUSES, 0))
    repaired: int = 0
    max_seconds: float = 0.0
    sample: list[Figures] = field(default_factory=list)

    def add(self, outcome: Outcome) -> Tally:
        self.counts[outcome.status] += 1
        self.repaired += outcome.repaired
        if outcome.status == "succeeded":
            self.max_seconds = max(self.max_seconds, outcome.seconds)
            self.sample.append(
                Figures(rank(outcome.id), outcome.id, outcome.seconds, outcome.final_loss, outcome.batch_size)
            )
            if len(self.sample) > 2 * SAMPLE_SIZE:  # trimmed now and then, not at every pair
                self.sample = heapq.nsmallest(SAMPLE_SIZE, self.sample, key=lambda f: f.rank)
        return self

    @classmethod
    def merged(cls, tallies: list[Tally]) -> Tally:
        total = cls()
        for tally in tallies:
            for status, count in tally.counts.items():
                total.counts[status] += count
            total.repaired += tally.repaired
            total.max_seconds = max(total.max_seconds, tally.max_seconds)
            total.sample += tally.sample
        total.sample = heapq.nsmallest(SAMPLE_SIZE, total.sample, key=lambda f: f.rank)
        return total

    def seconds_per_pair(self) -> dict[str, float | int] | None:
        """Median (over the sample: exact up to SAMPLE_SIZE pairs) and max seconds per pair."""
        if not self.sample:
            return None
        return {
            "median": statistics.median(f.seconds for f in self.sample),
            "max": self.max_seconds,
            "sampled_pairs": len(self.sample),
        }


@dataclass
class ReportChoice:
    """The outcomes the report shows, chosen in bounded memory (at most REPORT_FIRST +
    REPORT_WORST + REPORT_RANDOM, whatever the number of pairs)."""

    first: list[Outcome] = field(default_factory=list)
    worst: list[Outcome] = field(default_factory=list)
    random: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> ReportChoice:
        self.first.append(outcome)
        self.random.append(outcome)
        if outcome.final_loss is not None:
            self.worst.append(outcome)
        if len(self.first) + len(self.random) > 4 * (REPORT_FIRST + REPORT_RANDOM):
            self._trim()
        return self

    def _trim(self) -> None:
        self.first = heapq.nsmallest(REPORT_FIRST, self.first, key=lambda o: o.id)
        self.worst = heapq.nlargest(REPORT_WORST, self.worst, key=lambda o: (o.final_loss, o.id))
        self.random = heapq.nsmallest(REPORT_RANDOM, self.random, key=lambda o: rank(o.id))

    @classmethod
    def merged(cls, choices: list[ReportChoice]) -> ReportChoice:
        total = cls()
        for choice in choices:
            total.first += choice.first
            total.worst += choice.worst
            total.random += choice.random
        total._trim()
        return total

    def outcomes(self) -> list[Outcome]:
        """Each chosen outcome once, in id order."""
        chosen = {o.id: o for o in (*self.first, *self.worst, *self.random)}
        return [chosen[key] for key in sorted(chosen)]
