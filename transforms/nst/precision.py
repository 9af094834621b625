"""Which precision the network runs in: ``auto`` resolved for each pair on the engine's device.

bf16 convolutions are a device question, not a quality one (the parts that decide the result
stay fp32; objective.py, vgg.py): measured 2.3x faster than fp32 on a CPU with AVX512-BF16/AMX,
and over 6x *slower* on an AVX2-only one, which emulates them. On a GPU, bf16 tensor cores came with
compute capability 8.0 (A100); older GPUs emulate bf16 too. So ``auto`` is bf16 exactly where
the device has bf16 arithmetic in hardware, read from what the device declares (CPU flags, CUDA
capability), never assumed from the machine type.

Imports: torch, config and the standard library; no Beam, no storage.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Final

import torch

from transforms.nst.config import StyleConfig

# CPU flags (Linux's /proc/cpuinfo) that mean bf16 dot products in hardware.
CPU_BF16_FLAGS: Final = ("avx512_bf16", "amx_bf16")
# The first CUDA compute capability with bf16 tensor cores (Ampere).
CUDA_BF16_CAPABILITY: Final = (8, 0)


@functools.cache
def _cpu_info() -> tuple[str, frozenset[str]]:
    """The CPU's model name and flags, as Linux reports them ('' and none elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine(), frozenset()
    name, flags = "", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not name:
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = frozenset(value.split())
    return name or platform.machine(), flags


def has_fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (and so runs bf16 convolutions faster)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= CUDA_BF16_CAPABILITY
    if device.type == "cpu":
        return any(flag in _cpu_info()[1] for flag in CPU_BF16_FLAGS)
    return False


def resolve_precision(config: StyleConfig, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """``fp32`` or ``bf16`` for a pair of ``config``: a forced one as asked; ``auto`` is bf16
    where the device has it in hardware and the pair's result is measured to stay within 1% of
    fp32's (L-BFGS, whose last phase runs in fp32; Adam has no such phase and stays fp32), in a
    float32 engine (a float64 engine, for exact comparisons in tests, stays exact)."""
    if config.precision != "auto":
        return config.precision
    suited = config.optimizer == "lbfgs" and dtype == torch.float32
    return "bf16" if suited and has_fast_bf16(device) else "fp32"


def describe_device(device: torch.device) -> str:
    """One line naming the device and its bf16 support, for benchmark tables and logs."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} (compute {major}.{minor}, bf16 tensor cores: {'yes' if has_fast_bf16(device) else 'no'})"
    name, flags = _cpu_info()
    bf16 = [flag for flag in CPU_BF16_FLAGS if flag in flags]
    threads = torch.get_num_threads()
    return f"{name}, {threads} threads (bf16 in hardware: {', '.join(bf16) if bf16 else 'no'})"
