"""Limits: what one job will do for any manifest row, set by the operator, checked everywhere.

A manifest may come from someone the operator does not trust (a customer's upload, a generated
file gone wrong). These bounds keep one row from running for ever, exhausting memory or reading
what it should not; each has a flag to raise it. Free of torch and Beam (the command line's help
shows the defaults).

Imports: locations (for location schemes) and the torch-free StyleConfig; no Beam.
"""

from __future__ import annotations

from dataclasses import dataclass

from transforms.locations import DEFAULT_SCHEMES
from transforms.nst.config import MAX_INPUT_PIXELS, StyleConfig


@dataclass(frozen=True)
class Limits:
    """Bounds of one job. The defaults allow 4096 px prints and CPU runs of a few hours a pair."""

    max_image_size: int = 4096
    max_iterations: int = 10_000
    # Seconds a pair may take from its first read to its result; the pair fails, the job goes on.
    pair_time_limit: float = 7200.0
    max_input_bytes: int = 256 * 2**20
    # Decoded pixels of one input image (decompression bombs are refused before decoding).
    max_input_pixels: int = MAX_INPUT_PIXELS
    allowed_schemes: tuple[str, ...] = DEFAULT_SCHEMES
    # GiB a pair may use on its device; None: what the device has free when the pair starts.
    device_memory_gb: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_image_size", "max_iterations", "max_input_bytes", "max_input_pixels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name} must be a positive integer, got {value!r}")
        if not self.pair_time_limit > 0 or self.pair_time_limit == float("inf"):
            raise ValueError(f"--pair_time_limit must be a finite number of seconds > 0, got {self.pair_time_limit!r}")
        if self.device_memory_gb is not None and not 0 < self.device_memory_gb < float("inf"):
            raise ValueError(f"--device_memory_gb must be a finite number > 0, got {self.device_memory_gb!r}")
        if not self.allowed_schemes:
            raise ValueError("--allowed_schemes must name at least one scheme (file, gs, s3, ...)")

    def check(self, config: StyleConfig) -> None:
        """Raises ValueError naming the setting and the flag that bounds it."""
        if config.image_size > self.max_image_size:
            raise ValueError(
                f"image_size {config.image_size} is over --max_image_size {self.max_image_size} "
                "(raise it where the memory is there)"
            )
        if config.style_size > self.max_image_size:
            raise ValueError(
                f"style size {config.style_size} (image_size {config.image_size} x style_scale {config.style_scale:g}) "
                f"is over --max_image_size {self.max_image_size} (raise it where the memory is there)"
            )
        if config.total_iterations > self.max_iterations:
            what = "iterations" if not config.coarse_scales else "iterations of all scales"
            raise ValueError(f"{what} {config.total_iterations} is over --max_iterations {self.max_iterations}")
