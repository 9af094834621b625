"""What flows into and out of the engine: requests (and the queue of ready ones a stream takes
from), style targets, per-iteration records, results and the errors that fail a pair. Plain dataclasses, so that callers (the pipeline's DoFns, the
output contract) can name them without importing torch.

Imports: Pillow and config (torch only for type checking); no Beam, no storage.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from PIL import Image

from transforms.nst.config import StyleConfig

if TYPE_CHECKING:
    from torch import Tensor


class ImageTooSmallError(ValueError):
    """An image is smaller than the deepest layer used can see."""


class TimeLimitError(TimeoutError):
    """The optimization ran past the caller's time limit (``stylize(time_limit=...)``)."""


class NonFiniteLossError(ArithmeticError):
    """No image seen during the optimization had a finite loss."""


@dataclass(frozen=True)
class IterationRecord:
    """Losses of one evaluated image; each term is weighted, so the terms add up to ``total``.

    ``iteration`` counts the optimizer updates applied before the evaluation: 0 is the initial
    image, and the result's ``final`` record (iteration = ``iterations``) is the image as written.
    ``rejected`` marks an image whose step the divergence guard undid (lbfgs.py).
    """

    iteration: int
    total: float
    content: float
    style: float
    tv: float
    style_layers: dict[str, float]
    seconds: float
    rejected: bool = False

    @classmethod
    def from_values(
        cls, iteration: int, values: Sequence[float], layers: Sequence[str], seconds: float, rejected: bool = False
    ) -> IterationRecord:
        """A record from one row of :class:`Objective`'s output, copied to the host."""
        total, content, style, tv, *per_layer = values
        return cls(
            iteration=iteration,
            total=total,
            content=content,
            style=style,
            tv=tv,
            style_layers=dict(zip(layers, per_layer, strict=True)),
            seconds=seconds,
            rejected=rejected,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: a non-finite loss (a rejected trial) becomes None, which JSON can hold."""

        def finite(value: float) -> float | None:
            return value if math.isfinite(value) else None

        data = asdict(self)
        for name in ("total", "content", "style", "tv"):
            data[name] = finite(data[name])
        data["style_layers"] = {k: finite(v) for k, v in self.style_layers.items()}
        return data


@dataclass(frozen=True)
class StyleTargets:
    """Blended Gram matrices of one or more style images: encode once, reuse for many contents."""

    grams: dict[str, Tensor]
    # Longest side the style images were encoded at; it must equal the config's style_size.
    size: int
    # The first style image at that size, for init="style".
    first_image: Image.Image
    network_key: tuple[object, ...]


@dataclass(frozen=True)
class StyleResult:
    """The stylized image, one record per iteration, and the record of the written image.

    ``history`` ends with ``final``. ``chosen_iteration`` is the iteration whose pixels were
    written: the last one, unless an earlier image scored lower (then that one is returned).
    """

    image: Image.Image
    history: list[IterationRecord]
    final: IterationRecord
    chosen_iteration: int
    device: str
    seconds: float
    # Coarse-to-fine: the results of the coarser scales, in order (``history`` is the last scale's).
    coarse: tuple[StyleResult, ...] = ()
    # Tiles the last scale ran in (a request's tiling: tasks.plan); 1: the whole image at once.
    tiles: int = 1
    # Iterations at which a new phase of the optimization began (the in-range restart of L-BFGS).
    phase_starts: tuple[int, ...] = ()
    # Why it stopped: "iterations" (all of them ran) or "converged" (convergence.py).
    stop_reason: str = "iterations"
    # The network's precision, resolved (fp32 or bf16).
    precision: str = "fp32"


@dataclass(frozen=True)
class StyleRequest:
    """One pair of a batch: a content image, its style targets, its settings."""

    content: Image.Image
    style: StyleTargets
    # Per-pair settings (default: the engine's); network fields must match the engine's.
    config: StyleConfig | None = None
    # The starting image: given, it wins over ``config.init`` (which then names its location).
    init_image: Image.Image | None = None
    # What errors call the content image (its URL, say).
    content_name: str = "content image"
    # Coarse-to-fine: style targets for each of ``config.scales``, at its style size.
    coarse_styles: tuple[StyleTargets, ...] = ()
    # (tile px, overlap px): the last scale in overlapping tiles (a result too large for the
    # device at once: memory.place); None: whole.
    tiling: tuple[int, int] | None = None


K = TypeVar("K", bound=Hashable)

IterationCallback = Callable[[IterationRecord], None]
BatchCallback = Callable[[int, IterationRecord], None]
# A stream's callback: (the key its caller put the request under, a pair id say; the record).
KeyedCallback = Callable[[Any, IterationRecord], None]


def summed(records: Sequence[IterationRecord], seconds: float) -> IterationRecord:
    """One record for several tiles' records of one iteration: their losses added up."""
    first = records[0]
    return IterationRecord(
        iteration=first.iteration,
        total=sum(r.total for r in records),
        content=sum(r.content for r in records),
        style=sum(r.style for r in records),
        tv=sum(r.tv for r in records),
        style_layers={layer: sum(r.style_layers[layer] for r in records) for layer in first.style_layers},
        seconds=seconds,
        rejected=any(r.rejected for r in records),
    )


@dataclass(frozen=True)
class PairTaken(Generic[K]):
    """The engine took the request of ``key`` from its queue: the caller may put the next one."""

    key: K


@dataclass(frozen=True)
class PairFinished(Generic[K]):
    """The pair of ``key`` is done: its result, or the exception that failed it."""

    key: K
    outcome: StyleResult | Exception


@dataclass(frozen=True)
class SlotUse:
    """How full a run kept the device's slots: ``batch_steps`` forward-and-backward passes,
    ``slot_steps`` the slots they offered (each batch step offers the run's slots), and
    ``row_steps`` the rows that advanced a pair (the iterations its logs record)."""

    batch_steps: int = 0
    slot_steps: int = 0
    row_steps: int = 0

    def __add__(self, other: SlotUse) -> SlotUse:
        return SlotUse(
            self.batch_steps + other.batch_steps, self.slot_steps + other.slot_steps, self.row_steps + other.row_steps
        )

    @property
    def busy(self) -> float | None:
        """The share of the slots that advanced a pair (None before any step)."""
        return self.row_steps / self.slot_steps if self.slot_steps else None


@dataclass(frozen=True)
class RunEnded:
    """The run is over: every pair it took has finished; ``use`` says how full its slots were."""

    use: SlotUse


RunEvent = PairTaken[K] | PairFinished[K] | RunEnded


class ReadyQueue(Generic[K]):
    """Requests ready to run, in the order they were put, each under its caller's key (a pair id).

    The caller prepares each request (reads it, encodes its styles) and puts it here; the engine
    takes one whenever it has room for another pair, says so (``PairTaken``), and gives every
    result back under its key (``StyleTransfer.run``). Taking never calls back into the caller: a
    queue that is empty when the engine has room leaves that room empty until the caller puts
    more. ``taken`` holds the requests taken whose result has not been given back yet.
    """

    def __init__(self, ready: Iterable[tuple[K, StyleRequest]] = ()) -> None:
        self._ready: deque[tuple[K, StyleRequest]] = deque(ready)
        self.taken: dict[K, StyleRequest] = {}

    def put(self, key: K, request: StyleRequest) -> None:
        self._ready.append((key, request))

    def take(self) -> tuple[K, StyleRequest] | None:
        """The next ready request, or None when none is ready."""
        if not self._ready:
            return None
        key, request = self._ready.popleft()
        self.taken[key] = request
        return key, request

    def first(self) -> StyleRequest | None:
        """The next ready request, left in the queue."""
        return self._ready[0][1] if self._ready else None

    def done(self, key: K) -> None:
        """The result of ``key`` is given back: it is no longer taken."""
        self.taken.pop(key, None)

    def __len__(self) -> int:
        return len(self._ready)
