"""Where models run, and in which numeric precision."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


PRECISIONS = ("auto", "fp32", "bf16")


def bf16_is_fast(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CUDA card that supports it, or a CPU with AVX512-BF16
    or AMX (elsewhere bfloat16 is emulated and slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                    or getattr(cpu, "_is_amx_tile_supported", lambda: False)())
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``fp32`` or ``bf16``: ``auto`` is bf16 mixed precision where :func:`bf16_is_fast`, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return precision


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """bfloat16 autocast for ``bf16`` (weights, gradients and the optimiser stay float32), nothing for fp32."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield
