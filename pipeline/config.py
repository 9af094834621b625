"""PipelineConfig, the one configuration of a job, from the parsed flags: free of Beam and torch,
so that a mistake on the command line is answered before either is imported (main.py).

Imports: flags, limits, locations, outputs' OutputSpec and the torch-free StyleConfig; no torch, no fsspec, and no Beam
but its PipelineRunner, to check a runner given by its module path.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Final

from pipeline import flags
from transforms import locations
from transforms.limits import Limits
from transforms.nst.config import StyleConfig, with_color_alias
from transforms.outputs import OutputSpec

# How alike an unknown flag must be to one of ours to be called a typo before Beam's own flags
# are known (check_quickly); tests/test_cli.py checks that no Beam flag comes this close.
TYPO_SIMILARITY: Final = 0.85


def _batch_size(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--batch_size must be auto or a number, got {text!r}") from None


def _dry_run(value: object) -> bool:
    """Beam's ``--dry_run`` (main.py spells a bare one ``--dry_run=true``) as a switch."""
    try:
        return value is True or flags.switch(str(value))
    except argparse.ArgumentTypeError:
        raise ValueError(f"--dry_run: expected true or false, got {value!r}") from None


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a job needs, validated once at launch and passed down, never mutated."""

    output: str
    style: StyleConfig
    manifest: str | None = None
    manifest_format: str | None = None
    contents: str | None = None
    styles: str | None = None
    overwrite: bool = False
    strict: bool = False
    started: float = field(default_factory=time.time)
    limits: Limits = field(default_factory=Limits)
    # Pairs per batch on a device; None: auto (from the device's free memory).
    batch_size: int | None = None
    run_id: str = ""
    # Pairs the run expects, counted by the pre-flight step; for the progress display only.
    expected_pairs: int | None = None
    # With globs: styles drawn for each content (0: every style).
    styles_per_content: int = 0
    layout: str = "flat"
    spec: OutputSpec = field(default_factory=OutputSpec)
    dry_run: bool = False

    def __post_init__(self) -> None:
        if not self.output:
            raise ValueError("--output is required")
        # Every location the job would touch, refused before anything contacts it: the output one
        # filesystem it can write, the inputs of the schemes allowed (http off: no request goes out).
        try:
            locations.check_output_location(self.output)
        except ValueError as exc:
            raise ValueError(f"--output {exc}") from None
        for flag, location in (("--manifest", self.manifest), ("--contents", self.contents), ("--styles", self.styles)):
            if location:
                try:
                    locations.check_location(str(location), self.limits.allowed_schemes)
                except ValueError as exc:
                    raise ValueError(f"{flag} {exc}") from None
        if self.manifest and (self.contents or self.styles):
            raise ValueError("give --manifest, or --contents and --styles, not both")
        if not self.manifest and not (self.contents and self.styles):
            raise ValueError("give --manifest, or --contents and --styles together")
        self.limits.check(self.style)
        if self.styles_per_content < 0:
            raise ValueError(f"--styles_per_content must be 0 (every style) or more, got {self.styles_per_content}")
        if self.styles_per_content and self.manifest:
            raise ValueError(
                "--styles_per_content draws styles for --contents and --styles; a manifest names its pairs"
            )
        if self.batch_size is not None and not 1 <= self.batch_size <= 1024:
            raise ValueError(f"--batch_size must be auto or a number from 1 to 1024, got {self.batch_size}")
        if not self.run_id:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.started))
            object.__setattr__(self, "run_id", f"{stamp}-{secrets.token_hex(3)}")

    @classmethod
    def from_flags(cls, view: Any, dry_run: object = False) -> PipelineConfig:
        """The config of parsed flags: Beam's options view (options.config_from_options) or an
        argparse namespace (check_quickly). Raises ValueError naming the bad flag or value."""
        style_fields = {f.name for f in dataclasses.fields(StyleConfig)} | {"original_colors"}
        style = StyleConfig(**with_color_alias({name: getattr(view, name) for name in style_fields}))  # type: ignore[arg-type]
        if not 0 < view.max_input_mb < float("inf"):
            raise ValueError(f"--max_input_mb must be a finite number > 0, got {view.max_input_mb}")
        limits = Limits(
            max_image_size=view.max_image_size,
            max_iterations=view.max_iterations,
            pair_time_limit=view.pair_time_limit,
            max_input_bytes=int(view.max_input_mb * 2**20),
            max_input_pixels=view.max_input_pixels,
            allowed_schemes=tuple(view.allowed_schemes),
            device_memory_gb=view.device_memory_gb,
        )
        return cls(
            output=view.output or "",
            style=style,
            manifest=view.manifest,
            manifest_format=view.manifest_format,
            contents=view.contents,
            styles=view.styles,
            overwrite=view.overwrite,
            strict=view.strict,
            limits=limits,
            batch_size=_batch_size(view.batch_size),
            styles_per_content=view.styles_per_content,
            layout=view.output_layout,
            spec=OutputSpec(view.output_format, view.output_quality, view.log_every),
            dry_run=_dry_run(dry_run),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "contents": self.contents,
            "styles": self.styles,
            "output": self.output,
            "overwrite": self.overwrite,
            "strict": self.strict,
            "run_id": self.run_id,
            "batch_size": self.batch_size or "auto",
            "styles_per_content": self.styles_per_content,
            "output_layout": self.layout,
            "output_format": self.spec.image_format,
            "output_quality": self.spec.quality,
            "log_every": self.spec.log_every,
            "limits": dataclasses.asdict(self.limits),
            "style": self.style.to_dict(),
        }


def check_quickly(argv: list[str]) -> None:
    """Every check of the command line that needs neither Beam nor torch: the job's flags and
    their values, the config they make, a local manifest that is not there, and unknown flags
    that are near-misses of ours (``--iteration``). Beam's own flags are checked later, with
    Beam (options.check_arguments); this answers the common mistakes in a fraction of a second.

    Raises:
        ValueError: naming the flag or value, as the full check would.
    """
    parser = flags.RaisingParser(add_help=False, allow_abbrev=False)
    flags.add_arguments(parser)
    parser.add_argument(flags.DRY_RUN, default=False)
    parsed, unknown = parser.parse_known_args(argv)
    ours = [option for action in parser._actions for option in action.option_strings]
    for item in unknown:
        name = item.split("=", 1)[0]
        typo = flags.did_you_mean(name, ours, TYPO_SIMILARITY) if name.startswith("--") else None
        if typo:
            raise ValueError(typo)
    config = PipelineConfig.from_flags(parsed, parsed.dry_run)
    if config.manifest and "://" not in config.manifest and not os.path.exists(config.manifest):
        raise ValueError(f"--manifest {config.manifest}: no such file")
    check_runner(unknown)


# The runners Beam knows (StandardOptions.ALL_KNOWN_RUNNERS; tests/test_cli.py checks this list
# against the installed Beam), so that a wrong --runner is answered before Beam is imported.
KNOWN_RUNNERS: Final = (
    "DataflowRunner",
    "BundleBasedDirectRunner",
    "DirectRunner",
    "SwitchingDirectRunner",
    "InteractiveRunner",
    "FlinkRunner",
    "FnApiRunner",
    "KafkaStreamsRunner",
    "PortableRunner",
    "PrismRunner",
    "SparkRunner",
    "TestDirectRunner",
    "TestDataflowRunner",
)
_DATAFLOW_RUNNERS: Final = ("DataflowRunner", "TestDataflowRunner")


def runner_named(name: str) -> str | None:
    """The runner Beam takes ``--runner name`` for, as Beam resolves it (any case, "Runner" may be
    left out: ``direct``, ``DataFlowRunner``); None for a runner class given by its module path.

    Raises:
        ValueError: a name Beam does not know, with the nearest one.
    """
    if "." in name:
        return None  # "my.module.MyRunner": the user's own runner, imported by Beam
    by_lower = {runner.lower(): runner for runner in KNOWN_RUNNERS}
    found = by_lower.get(name.lower()) or by_lower.get(name.lower() + "runner")
    if found:
        return found
    spelt = name.lower() if name.lower().endswith("runner") else name.lower() + "runner"
    nearest = difflib.get_close_matches(spelt, list(by_lower), n=1, cutoff=0.6)
    hint = f"; did you mean {by_lower[nearest[0]]}?" if nearest else f" (Beam's runners: {', '.join(KNOWN_RUNNERS)})"
    raise ValueError(f"--runner {name}: not a runner Beam knows{hint}")


def _check_runner_class(path: str) -> None:
    """``path`` (``my.module.MyRunner``) names a class that is a Beam runner, as Beam will import it.

    Raises:
        ValueError: it cannot be imported, or it is not a runner class (``os.system``).
    """
    module_name, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"--runner {path}: cannot be imported ({type(exc).__name__}: {exc})") from exc
    from apache_beam.runners.runner import PipelineRunner  # only for a runner given by its path

    if not (isinstance(found, type) and issubclass(found, PipelineRunner)):
        raise ValueError(f"--runner {path}: not a Beam runner class (a subclass of PipelineRunner)")


def check_runner(beam_args: list[str]) -> None:
    """``--runner`` names a runner Beam knows, and Dataflow's runners have what Dataflow needs
    before anything is staged: ``--project``, ``--region`` and a temp location on a bucket
    (``--temp_location``, or ``--staging_location``, which Beam uses for both).

    Raises:
        ValueError: naming the flag and the cure.
    """
    parser = flags.RaisingParser(add_help=False, allow_abbrev=False)
    for name in ("--runner", "--project", "--region", "--temp_location", "--staging_location"):
        parser.add_argument(name)
    given, _ = parser.parse_known_args(beam_args)
    if given.runner is not None and not given.runner.strip():
        raise ValueError(f"--runner is empty: name a runner ({', '.join(KNOWN_RUNNERS)})")
    runner = runner_named(given.runner) if given.runner else None
    if given.runner and runner is None:
        _check_runner_class(given.runner)
    if runner not in _DATAFLOW_RUNNERS:
        return
    for flag in ("project", "region"):
        if not getattr(given, flag):
            raise ValueError(f"--runner {given.runner} needs --{flag} (see docs/dataflow.md)")
    location = given.temp_location or given.staging_location
    if not location or not location.startswith("gs://"):
        found = f", got {location!r}" if location else ""
        raise ValueError(f"--runner {given.runner} needs --temp_location on a bucket (gs://BUCKET/tmp){found}")
