"""What many test modules share: test pictures, a job's arguments, an engine's config, and the
records a finished job leaves. Plain functions (fixtures are in conftest.py)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from transforms.nst.config import StyleConfig


def synthetic_image(seed: int, width: int = 64, height: int = 48) -> Image.Image:
    """A smooth-plus-noise RGB test picture, different for each seed."""
    generator = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height).view(height, 1)
    xs = torch.linspace(0, 1, width).view(1, width)
    phase = torch.rand(3, generator=generator) * 6.28
    frequency = 2 + torch.rand(3, generator=generator) * 6
    channels = [0.5 + 0.35 * torch.sin(frequency[c] * (xs + ys * (c + 1)) * 3.14 + phase[c]) for c in range(3)]
    pixels = torch.stack(channels) + 0.1 * torch.rand(3, height, width, generator=generator)
    data = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    return Image.frombytes("RGB", (width, height), bytes(data.flatten().tolist()))


def write_images(folder: Path, names: dict[str, int]) -> None:
    """``names``: file name -> seed of its synthetic picture."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, seed in names.items():
        synthetic_image(seed).save(folder / name)


def job_args(weights: str, output: Path, *extra: str) -> list[str]:
    """A small, fast job on seeded random weights: 48 px, 6 iterations, the in-process runner."""
    return [
        "--runner=FnApiRunner",  # the DirectRunner's in-process engine, without its Prism attempt
        f"--output={output}",
        f"--weights={weights}",
        "--weights_family=torchvision",
        "--image_size=48",
        "--iterations=6",
        *extra,
    ]


def engine_config(weights_file, **changes: object) -> StyleConfig:
    """The engine tests' config: 64 px, 8 iterations, fp32 on the CPU, with ``changes``."""
    base = StyleConfig(
        weights=weights_file(changes.get("model", "vgg19")),
        weights_family="torchvision",
        image_size=64,
        iterations=8,
        device="cpu",
        precision="fp32",  # exact arithmetic; bf16 has its own tests
    )
    return base.replace(**changes)


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def failures_of(out: Path) -> list[dict]:
    """The failure records of the latest run at ``out`` (none when nothing failed)."""
    summary = summary_of(out)
    if summary["failures_file"] is None:
        return []
    return [json.loads(line) for line in Path(summary["failures_file"]).read_text().splitlines()]


def output_mtimes(output: Path) -> dict[str, int]:
    """Relative path -> modification time (ns) of every file under ``output``."""
    return {str(p.relative_to(output)): p.stat().st_mtime_ns for p in output.rglob("*") if p.is_file()}


@dataclass(frozen=True)
class FinishedRun:
    """A two-pair job run to the end once per session (conftest.finished_run): ``cat`` and
    ``dog``, each with ``waves``. Tests that damage or reread a finished output take a copy of
    it; the inputs are shared, so no test may change them."""

    manifest: Path
    output: Path
    weights: str

    def copy(self, to: Path) -> tuple[Path, list[str]]:
        """The finished output copied to ``to`` (times kept), and the job's arguments for it:
        rerun with them, every pair is found done."""
        shutil.copytree(self.output, to, symlinks=True)
        return to, job_args(self.weights, to, f"--manifest={self.manifest}")


def run_pairs(engine, requests, slots=None, callback=None, time_limit=None) -> list:
    """Each request's outcome (its StyleResult or the exception that failed it), in order, from one
    run of ``engine`` with ``slots`` rows per task shape (default: all the requests at once)."""
    from transforms.nst.records import PairFinished, ReadyQueue

    queue = ReadyQueue(enumerate(requests))
    events = engine.run(queue, slots or len(requests), callback, time_limit)
    outcomes = {event.key: event.outcome for event in events if isinstance(event, PairFinished)}
    return [outcomes[index] for index in range(len(requests))]
