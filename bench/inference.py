"""Inference cost of one policy chunk (10 DDIM steps) at batch 1.

    .venv/bin/python bench/inference.py                  # paper preset, CPU here (CUDA when present)
    .venv/bin/python bench/inference.py --preset small --repeats 10

Prints the parameter count, the time per policy chunk with the observation work (ResNet
features and the AdaLN observation terms) computed once per chunk and, side by side, recomputed
at every denoising step, the FLOPs of a chunk counted by torch's FlopCounterMode, and the achieved
GFLOP/s next to the machine's stated peak. Pretrained weights are replaced by random weights of
the same architecture (SDXL VAE, ResNet-18): cost does not depend on their values.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from uwm_core.config import load_model_config
from uwm_core.model import UnifiedWorldModel

# Dense peaks of NVIDIA cards (FP32 non-tensor / BF16 tensor, TFLOP/s), from their datasheets.
GPU_PEAKS = {"H100": (67.0, 989.0), "H200": (67.0, 989.0), "A100": (19.5, 312.0), "L40S": (91.6, 362.0),
             "RTX 4090": (82.6, 165.2), "A10": (31.2, 125.0)}


def cpu_peak_gflops(threads: int) -> tuple[float, str]:
    """FP32 peak: threads x clock x FLOPs/cycle (2 FMA units x vector width x 2)."""
    info = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    flags = set(re.search(r"^flags\s*:\s*(.*)$", info, re.M).group(1).split()) if "flags" in info else set()
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M)]
    ghz = max(mhz) / 1000 if mhz else 2.0
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    flops_per_cycle = 2 * lanes * (2 if "fma" in flags or lanes == 16 else 1)
    model = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    name = model.group(1).strip() if model else platform.processor()
    return threads * ghz * flops_per_cycle, (f"{name}: {threads} threads x {ghz:.2f} GHz x {flops_per_cycle} "
                                             f"FP32 FLOP/cycle ({'AVX-512' if lanes == 16 else 'AVX2' if lanes == 8 else 'SSE'} FMA)")


def time_chunks(model, obs, cache: bool, repeats: int, device) -> list[float]:
    times = []
    for i in range(repeats + 1):  # first call warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.sample("policy", obs, generator=torch.Generator(device).manual_seed(i), cache_condition=cache)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    cfg = load_model_config(args.preset, {"resnet_weights": None, "vae": {"pretrained": None}})
    model = UnifiedWorldModel(cfg).to(device).eval()
    S = cfg.image_size
    if model.vae is not None and model.vae.needs_latent_statistics:  # presets with their own VAE
        model.vae.estimate_latent_statistics(torch.rand(4, 3, S, S, device=device))
    obs = torch.rand(1, cfg.num_views, cfg.obs_horizon, 3, S, S, device=device)
    n_params = sum(p.numel() for p in model.parameters())
    n_net = sum(p.numel() for p in model.net.parameters())
    n_enc = sum(p.numel() for p in model.obs_encoder.parameters()) if model.obs_encoder is not None else 0
    n_vae = sum(p.numel() for p in model.vae.parameters()) if model.vae is not None else 0

    # Same seed, both ways: the outputs must be identical, not merely close.
    gen = lambda: torch.Generator(device).manual_seed(123)  # noqa: E731
    a_cached, _ = model.sample("policy", obs, generator=gen(), cache_condition=True)
    a_fresh, _ = model.sample("policy", obs, generator=gen(), cache_condition=False)
    identical = torch.equal(a_cached, a_fresh)

    flops = {}
    for cache in (True, False):
        with FlopCounterMode(display=False) as counter:
            model.sample("policy", obs, generator=gen(), cache_condition=cache)
        flops[cache] = counter.get_total_flops()

    times = {cache: time_chunks(model, obs, cache, args.repeats, device) for cache in (True, False)}

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        fp32, bf16 = next((v for k, v in GPU_PEAKS.items() if k in name), (float("nan"), float("nan")))
        peak, peak_desc = fp32 * 1000, f"{name}: FP32 {fp32} TFLOP/s (BF16 tensor {bf16} TFLOP/s)"
    else:
        peak, peak_desc = cpu_peak_gflops(torch.get_num_threads())

    print(f"preset {args.preset}  device {device}  batch 1  {cfg.num_views} views x {cfg.obs_horizon} frames "
          f"at {S}x{S}  DDIM steps {cfg.num_inference_steps}  torch threads {torch.get_num_threads()}")
    print(f"parameters: {n_params / 1e6:.1f} M total = transformer {n_net / 1e6:.1f} M + ResNet-18 {n_enc / 1e6:.1f} M "
          f"+ VAE {n_vae / 1e6:.1f} M (frozen, decoder unused by the policy)")
    print(f"machine peak: {peak:.0f} GFLOP/s ({peak_desc})")
    print(f"{'observation work':<28}{'chunk time (median)':>22}{'GFLOP/chunk':>14}{'GFLOP/s':>10}{'% of peak':>11}")
    for cache, label in ((True, "once per chunk (default)"), (False, "recomputed every step")):
        t = statistics.median(times[cache])
        gf = flops[cache] / 1e9
        print(f"{label:<28}{t * 1000:>19.1f} ms{gf:>14.2f}{gf / t:>10.1f}{100 * gf / t / peak:>10.1f}%")
    speedup = statistics.median(times[False]) / statistics.median(times[True])
    print(f"speed-up of computing observation work once: {speedup:.2f}x; outputs identical: {identical}")


if __name__ == "__main__":
    main()
