"""Where the writer's models run, and whether bf16 autocast pays off there.

bf16 autocast is ~1.6x faster on CPUs with native bf16 (AVX512-BF16, AMX) and on recent GPUs,
but on a CPU without it (AVX2 only, e.g. AMD Zen 3) every op is emulated and a training step
was measured ~18x slower (84 s vs 4.5 s per SFT step). So the profile's ``bf16: true`` means "where the hardware has it".
"""

from __future__ import annotations

from functools import cache
from pathlib import Path


def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_ok(requested: bool) -> bool:
    if not requested:
        return False
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def to_device(module):
    """The module on ``device()``; 8-bit models are placed at load (bitsandbytes forbids .to)."""
    if getattr(module, "is_loaded_in_8bit", False) or getattr(module, "is_quantized", False):
        return module
    return module.to(device())
