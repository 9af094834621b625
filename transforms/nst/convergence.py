"""When a pair has converged: its loss improved by less than a tolerance over a window.

Gatys et al. and neural-style run a fixed number of iterations. A pair whose loss has stopped
improving only spends device time from then on, and pairs differ a lot in when that happens, so
the engine asks this test after every iteration and stops the pair (or moves it to its next
phase) once its best loss improved by less than ``tolerance`` (relative) over the last ``window``
iterations of the phase. The best loss, not the latest: an L-BFGS step may raise the loss for an
iteration (a rejected or a recovering step), and that must neither stop a pair nor keep it going.

Imports: nothing but the standard library.
"""

from __future__ import annotations

import math


class ConvergenceTest:
    """The running best loss of one phase of one pair, and whether it has stopped improving.

    ``tolerance`` 0 never reports convergence (a fixed iteration count, as Gatys et al.).
    """

    def __init__(self, tolerance: float, window: int) -> None:
        if tolerance < 0 or not math.isfinite(tolerance):
            raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.tolerance = tolerance
        self.window = window
        self._best: list[float] = []  # the phase's best loss after each of its iterations

    def restart(self) -> None:
        """A new phase begins: what came before says nothing about how it converges."""
        self._best.clear()

    def converged(self, loss: float) -> bool:
        """Record one iteration's loss; True once the best loss improved by less than
        ``tolerance`` of itself over the last ``window`` iterations."""
        previous = self._best[-1] if self._best else math.inf
        self._best.append(min(previous, loss) if math.isfinite(loss) else previous)
        if not self.tolerance or len(self._best) <= self.window:
            return False
        then, now = self._best[-1 - self.window], self._best[-1]
        return math.isfinite(now) and then - now <= self.tolerance * abs(now)
