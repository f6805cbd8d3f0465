"""Inference precision of the denoiser and the observation encoder: fp32, bf16, or fp16 (CUDA).

``auto`` picks bf16 where the hardware computes it natively (measured on this project's 2-core
AVX-512 BF16 CPU: a paper-preset policy chunk takes about half the fp32 time, see
``bench/inference.py``), else fp32. The VAE, the DDIM steps and their clipping stay float32.
"""
from __future__ import annotations

from pathlib import Path

import torch

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 dot products


def cpu_has_native_bf16() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``precision`` (fp32, bf16, fp16 or auto) as the one to use on ``device``; ValueError when
    the device cannot run it."""
    device = torch.device(device)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of auto, {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision: fp16 runs on CUDA only (device {device}); use bf16 or fp32")
    return precision
