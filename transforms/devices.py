"""One GPU per worker process, when a machine has several.

Beam's DirectRunner in multi-processing mode (``--direct_running_mode multi_processing
--direct_num_workers N``) starts N worker processes on one machine; without care each would put
its model on GPU 0. Each process takes the lowest-numbered GPU whose lock file it can lock
(``fcntl.flock``, released by the kernel when the process ends, however it ends) and makes it
the current CUDA device, so ``cuda`` means that GPU in the process. The lock files live in the
temporary folder, which the job makes private to each run (pipeline/main.py). With more
processes than GPUs, the extra ones share GPUs round-robin. Dataflow gives each worker VM its
own GPUs, where this changes nothing.

Imports: torch, inside pin_cuda_device only; no Beam.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from typing import IO

_held: list[IO[bytes]] = []  # the lock files this process holds, open for its lifetime


def take_device(count: int, folder: str | None = None) -> int:
    """The index of the device this process should use, of ``count`` on the machine."""
    folder = folder or tempfile.gettempdir()
    for index in range(count):
        lock = open(os.path.join(folder, f"style-transfer-gpu-{index}.lock"), "ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _held.append(lock)
        return index
    return os.getpid() % count


def pin_cuda_device() -> int | None:
    """Make this process's own GPU the current CUDA device; its index, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    index = take_device(count) if count > 1 else 0
    torch.cuda.set_device(index)
    return index
