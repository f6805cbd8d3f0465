"""Inference speed of one policy chunk (10 DDIM steps, batch 1) against a reference-equivalent path.

    .venv/bin/python bench/inference.py                          # paper and small, CPU here (CUDA when present)
    .venv/bin/python bench/inference.py --presets paper --repeats 7

The reference-equivalent path does what the authors' ``sample_marginal_action`` does: fp32,
eager, ResNet features once per chunk, and the whole AdaLN conditioning Linear over
[observation ; timestep] at every denoising step. It is timed in the same process, alternating
chunk by chunk with our paths: fp32 eager (AdaLN observation terms once per chunk), each other
precision the device runs, the default (``precision: auto``), and with ``--compile`` (default on
CUDA) the default precision with the denoiser step compiled (CUDA graphs on CUDA). Prints the median chunk time of
each, its ratio to the reference, the largest action difference from fp32 with the same seed,
and, as its last line, the default path's speed-up at the paper preset.

Pretrained weights are replaced by random weights of the same architecture (SDXL VAE, ResNet-18),
and the zero-initialised output and AdaLN layers get random values too, so that the outputs, and
the differences between precisions, depend on every weight as in a trained model.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from uwm_core import WorldModel
from uwm_core.config import load_model_config
from uwm_core.model import UnifiedWorldModel
from uwm_core.model.precision import resolve_precision
from uwm_core.processing import ActionNormalizer


def randomised_model(preset: str, device: torch.device) -> UnifiedWorldModel:
    torch.manual_seed(0)
    cfg = load_model_config(preset, {"resnet_weights": None, "vae": {"pretrained": None}})
    model = UnifiedWorldModel(cfg).eval()
    for p in model.net.parameters():
        if not p.any():  # AdaLN-Zero and output heads: zero at initialisation, not in a trained model
            torch.nn.init.normal_(p, std=0.02)
    if model.vae is not None and model.vae.needs_latent_statistics:  # presets with their own VAE
        model.vae.estimate_latent_statistics(torch.rand(4, 3, cfg.image_size, cfg.image_size))
    return model.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_preset(preset: str, device: torch.device, repeats: int, compile_step: bool) -> float:
    """Prints the preset's table; returns the default path's speed-up over the reference."""
    reference = randomised_model(preset, device)
    cfg = reference.cfg
    obs = torch.rand(1, cfg.num_views, cfg.obs_horizon, 3, cfg.image_size, cfg.image_size, device=device)
    precisions = ["bf16", "fp16"] if device.type == "cuda" else ["bf16"]
    default = resolve_precision("auto", device)
    paths = {"reference-equivalent fp32": (reference, False), "ours fp32": (reference, True)}
    for precision in precisions:
        paths[f"ours {precision}" + (" (default)" if precision == default else "")] = (
            copy.deepcopy(reference).set_inference_precision(precision), True)
    if default == "fp32":
        paths["ours fp32 (default)"] = paths.pop("ours fp32")
    if compile_step:
        started = time.perf_counter()
        wm = WorldModel(copy.deepcopy(reference), ActionNormalizer.identity(cfg.action_dim), device, default, True)
        print(f"{preset}: {default} denoiser step {wm.compile_status} in {time.perf_counter() - started:.1f} s")
        paths[f"ours {default} compiled"] = (wm.model, True)

    def chunk(name: str, seed: int) -> torch.Tensor:
        model, cache = paths[name]
        return model.sample("policy", obs, generator=torch.Generator(device).manual_seed(seed), cache_condition=cache)[0]

    fp32_actions = chunk("reference-equivalent fp32", 7)
    error = {name: (chunk(name, 7) - fp32_actions).abs().max().item() for name in paths}  # also warms each path up
    times = {name: [] for name in paths}
    for _ in range(repeats):  # alternating, so that load and clock changes hit every path alike
        for name in paths:
            sync(device)
            start = time.perf_counter()
            chunk(name, 1)
            sync(device)
            times[name].append(time.perf_counter() - start)

    median = {name: statistics.median(t) for name, t in times.items()}
    base = median["reference-equivalent fp32"]
    n_params = sum(p.numel() for p in reference.parameters())
    print(f"\npreset {preset} ({n_params / 1e6:.1f} M parameters)  device {device}  batch 1  {cfg.num_views} views x "
          f"{cfg.obs_horizon} frames at {cfg.image_size}px  DDIM steps {cfg.num_inference_steps}  torch threads "
          f"{torch.get_num_threads()}  repeats {repeats}")
    print(f"{'path':<32}{'chunk median':>14}{'min':>10}{'vs reference':>14}{'max |a - a_fp32|':>18}")
    for name in paths:
        print(f"{name:<32}{median[name] * 1000:>11.1f} ms{min(times[name]) * 1000:>7.1f} ms"
              f"{base / median[name]:>13.2f}x{error[name]:>18.2e}")
    default_name = next(name for name in paths if name.endswith("(default)"))
    return base / median[default_name]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["paper", "small"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time the default precision with the denoiser step compiled (default: on CUDA)")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; default precision here: {resolve_precision('auto', device)}")
    compile_step = device.type == "cuda" if args.compile is None else args.compile
    speedups = {preset: bench_preset(preset, device, args.repeats, compile_step) for preset in args.presets}
    headline = "paper" if "paper" in speedups else args.presets[0]
    print(f"\ndefault path at the {headline} preset, batch 1:")
    print(f"speed-up vs reference-equivalent fp32 eager: {speedups[headline]:.2f}x")


if __name__ == "__main__":
    main()
