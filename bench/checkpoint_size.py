"""Size of a uwm-train checkpoint at the paper preset: every file of the run's checkpoint/ (the
latest, with training_state.pt) and checkpoints/step_N/, their totals, and what the tensors in
them are (the frozen VAE, trained weights, optimiser state).

    .venv/bin/python bench/checkpoint_size.py [--out DIR]    # CPU: ~1 min, ~11 GB of memory, ~9 GB of disk

The SDXL VAE and the ImageNet ResNet-18 cannot be downloaded here: the paper preset is built with
randomly initialised weights of the same architectures (model.vae.pretrained=null,
model.resnet_weights=null, as tests/ros/test_paper_preset_and_cli.py does); sizes do not depend on
the values. uwm-train's own ``setup`` builds the run on a small dataset with the paper's cameras
and action size, one optimiser step with zero gradients leaves AdamW and the EMA in the state a
real step leaves, and the loop's save function (``uwm_core.training.checkpoints.save_run``)
writes the checkpoints.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from uwm_core.checkpoint import TRAINING_STATE_FILE, WEIGHTS_FILE
from uwm_core.data import DatasetWriter
from uwm_core.train import load_train_config, setup
from uwm_core.training.checkpoints import save_run
from uwm_core.training.distributed import setup_distributed

CAMERAS, ACTION_DIM = ["left", "right", "wrist"], 7  # config/model/paper.yaml (DROID)
MB = 1e6


def write_dataset(path: Path) -> Path:
    with DatasetWriter(path, CAMERAS, fps=10, action_dim=ACTION_DIM) as writer:
        for _ in range(2):
            writer.add_episode({cam: np.zeros((24, 48, 64, 3), np.uint8) for cam in CAMERAS},
                               np.zeros((24, ACTION_DIM), np.float32))
    return path


def tensor_bytes(value) -> int:
    """Bytes of the tensors in a nested structure of dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def report(run_dir: Path) -> None:
    for ckpt in [run_dir / "checkpoint", *sorted((run_dir / "checkpoints").iterdir())]:
        total = 0
        for f in sorted(ckpt.iterdir()):
            total += f.stat().st_size
            print(f"  {f.relative_to(run_dir)}: {f.stat().st_size / MB:.1f} MB")
        print(f"{ckpt.relative_to(run_dir)}/ total: {total / MB:.1f} MB")
    latest = run_dir / "checkpoint"
    with safe_open(str(latest / WEIGHTS_FILE), framework="pt") as f:
        vae = sum(tensor_bytes(f.get_tensor(k)) for k in f.keys() if k.startswith("vae."))
    print(f"frozen VAE in {WEIGHTS_FILE}: {vae / MB:.1f} MB")
    state = torch.load(latest / TRAINING_STATE_FILE, map_location="cpu", weights_only=False, mmap=True)
    parts = ", ".join(f"{key} {tensor_bytes(value) / MB:.1f} MB" for key, value in state.items() if tensor_bytes(value))
    print(f"tensors in {TRAINING_STATE_FILE}: {parts}; VAE tensors: "
          f"{sum(tensor_bytes(v) for k, v in state['model'].items() if k.startswith('vae.')) / MB:.1f} MB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="keep the run here (default: a temporary directory, removed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        data = write_dataset(out / "data")
        cfg = load_train_config("pretrain", [f"datasets=[{data}]", "model.vae.pretrained=null",
                                             "model.resnet_weights=null", "latent_cache=false", "num_workers=0",
                                             "batch_size=1", f"out_dir={out}", "run_name=paper", "device=cpu"])
        torch.manual_seed(0)
        run = setup(cfg, setup_distributed(cfg.device))
        for p in run.trainable:
            p.grad = torch.zeros_like(p)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.ema.step(run.model)
        run.step = 1
        save_run(run)
        run.close()
        print(f"paper preset: {sum(p.numel() for p in run.trainable) / 1e6:.1f}M trained parameters, "
              f"{sum(v.numel() for k, v in run.model.state_dict().items() if k.startswith('vae.')) / 1e6:.1f}M "
              f"in the frozen VAE")
        report(run.dir)


if __name__ == "__main__":
    main()
