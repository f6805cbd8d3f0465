"""How much of each loss can the other modality explain? The measured rule for image_loss_weight.

    python bench/loss_balance.py --checkpoint runs/demo/train/checkpoint --dataset runs/demo/dataset \
        [--samples 2000] [--out bench/results/loss_balance_demo.json]

The UWM loss averages each modality's noise error over its elements (paper Eq. 1, 1:1 weights).
What forward dynamics can learn from the actions is the part of the next frames that the current
frames do not fix: its share of the image loss scales with the per-element variance of that part.
For the training samples of ``--dataset`` (centre crop, the checkpoint's VAE and normaliser) this
prints the mean per-element variance of

* the normalised action chunk,
* the next frames' latents minus the current frames' (the motion over the chunk), and
* the next frames' latents themselves,

and their ratio: action variance / latent-motion variance is the image-loss weight that gives one
unit of action-explained image variance the same weight in the loss as one unit of action variance.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from provenance import provenance  # bench/
from uwm_core import WorldModel
from uwm_core.data import EpisodeSamples, open_dataset, sample_spec


@torch.no_grad()
def element_variances(wm: WorldModel, dataset, samples: int, seed: int = 0) -> dict[str, float]:
    model = wm.model
    spec = sample_spec(model.cfg, model.vae.downsample)
    robot = [i for i in range(dataset.num_episodes) if dataset.has_actions[i]]
    items = EpisodeSamples(dataset, robot, spec, wm.normalizer)
    chosen = np.random.default_rng(seed).choice(len(items), size=min(samples, len(items)), replace=False)
    actions, motion, following = [], [], []
    for start in range(0, len(chosen), 64):
        batch = [items[int(i)] for i in chosen[start:start + 64]]
        current = model.encode_frames(torch.stack([b["obs"] for b in batch]))  # (B, V, C, To, h, w)
        nxt = model.encode_frames(torch.stack([b["next_obs"] for b in batch]))
        actions.append(torch.stack([b["actions"] for b in batch]).flatten(1))  # (B, Ta*A)
        following.append(nxt.flatten(1))
        motion.append((nxt - current).flatten(1))
    per_element = {name: float(torch.cat(parts).var(dim=0).mean())
                   for name, parts in (("actions", actions), ("latent motion", motion), ("next latents", following))}
    return {**per_element, "action elements": actions[0].shape[1], "latent elements": following[0].shape[1],
            "samples": len(chosen)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    started = time.time()
    torch.set_num_threads(2)
    wm = WorldModel.from_checkpoint(args.checkpoint, precision="fp32")
    v = element_variances(wm, open_dataset(args.dataset), args.samples)
    ratio = v["actions"] / v["latent motion"]
    print(f"per-element variance over {v['samples']} training samples: actions {v['actions']:.4f} "
          f"({v['action elements']} elements), latent motion {v['latent motion']:.4f}, next latents "
          f"{v['next latents']:.4f} ({v['latent elements']} elements)")
    print(f"action / latent-motion variance: {ratio:.1f} (the checkpoint was trained with image_loss_weight "
          f"{wm.config.image_loss_weight:g})")
    if args.out:
        report = {"command": f"python bench/loss_balance.py --checkpoint {args.checkpoint} --dataset {args.dataset} "
                             f"--samples {args.samples}",
                  "variance_per_element": v, "action_to_motion_ratio": round(ratio, 2),
                  "image_loss_weight_trained": wm.config.image_loss_weight,
                  **provenance(started)}
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
