"""Where do the action tokens look? Attention mass between action and next-frame tokens, per layer.

    python bench/action_image_attention.py --checkpoint runs/demo/train/checkpoint --dataset runs/demo/dataset \
        [--windows 40] [--first-windows 1] [--out bench/results/action_image_attention_demo.json]

For windows of the dataset (current frames t-1, t and next frames t+Ta, t+Ta+1 as training samples
them, from t = 0 with the first frame repeated; ``--first-windows 1``: each episode's first only) the
checkpoint samples through its public modes while hooks on every transformer block record, averaged
over heads, denoising steps and windows:

  inverse dynamics   attention mass of the action tokens' queries on the next-frame tokens (clean, t_img = 0)
  policy             the same with the next-frame tokens pure noise (t_img = T): the mass a token
                     gives tokens that carry nothing
  forward dynamics   attention mass of the next-frame tokens' queries on the action tokens (clean)

A uniform attention would give each group its share of the tokens (printed). If inverse dynamics'
mass is no larger than the policy's, the action tokens do not look at the future frames at all.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from future_latent_probe import window_frames  # bench/
from provenance import provenance  # bench/
from uwm_core import WorldModel
from uwm_core.data import open_dataset


class AttentionMass:
    """Forward pre-hooks on every block's attention: mass from ``queries`` tokens onto ``keys`` tokens."""

    def __init__(self, net):
        self.net, self.records, self.queries, self.keys = net, [[] for _ in net.blocks], None, None
        self.handles = [block.attn.register_forward_pre_hook(self._hook(i)) for i, block in enumerate(net.blocks)]

    def _hook(self, layer: int):
        def record(attn, inputs):
            if self.queries is None:
                return
            x = inputs[0]  # (B, N, D), the modulated input of the attention
            B, N, D = x.shape
            q, k, _ = attn.qkv(x).view(B, N, 3, attn.num_heads, D // attn.num_heads).float().permute(2, 0, 3, 1, 4)
            weights = torch.softmax(q @ k.transpose(-1, -2) / (D // attn.num_heads) ** 0.5, dim=-1)  # (B, H, N, N)
            self.records[layer].append(float(weights[:, :, self.queries, self.keys].sum(-1).mean()))
        return record

    def measure(self, queries: slice, keys: slice, run) -> list[float]:
        self.records = [[] for _ in self.net.blocks]
        self.queries, self.keys = queries, keys
        run()
        self.queries = None
        return [float(np.mean(r)) for r in self.records]


def windows(wm: WorldModel, dataset, count: int, first_windows: int | None):
    """(current frames, next frames, actions, state) of up to ``count`` windows, spread over the episodes."""
    found = []
    for episode in range(dataset.num_episodes):
        frames = {cam: dataset.frames(episode, cam) for cam in wm.cameras}
        state, actions = dataset.state(episode), dataset.actions(episode)
        for t, now, ahead in zip(*window_frames(len(actions), wm.obs_horizon, wm.action_horizon, first_windows)):
            found.append(({c: f[now] for c, f in frames.items()}, {c: f[ahead] for c, f in frames.items()},
                          actions[t:t + wm.action_horizon], None if state is None or not wm.state_dim else state[now]))
    picked = np.linspace(0, len(found) - 1, min(count, len(found))).round().astype(int)
    return [found[i] for i in picked]


def main() -> None:
    started = time.time()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--windows", type=int, default=40)
    parser.add_argument("--first-windows", type=int)
    parser.add_argument("--out")
    args = parser.parse_args()
    wm = WorldModel.from_checkpoint(args.checkpoint, precision="fp32")
    net = wm.model.net
    actions, images = slice(0, net.action_horizon), net.image_slice
    tokens = net.pos_embed.shape[1]
    probe = AttentionMass(net)
    mass = {"inverse dynamics: action -> next frames": [], "policy: action -> noise frames": [],
            "forward dynamics: next frames -> action": []}
    with torch.no_grad():
        for k, (now, ahead, chunk, state) in enumerate(windows(wm, open_dataset(args.dataset), args.windows,
                                                               args.first_windows)):
            runs = (lambda: wm.infer_actions(now, ahead, seed=k, state=state),
                    lambda: wm.predict_actions(now, seed=k, state=state),
                    lambda: wm.predict_next_frames(now, chunk, seed=k, state=state))
            for (name, values), run, (queries, keys) in zip(mass.items(), runs, ((actions, images), (actions, images),
                                                                                 (images, actions))):
                values.append(probe.measure(queries, keys, run))
    uniform = {"action share of tokens": net.action_horizon / tokens,
               "next-frame share of tokens": (images.stop - images.start) / tokens}
    table = {name: [round(float(v), 4) for v in np.mean(values, axis=0)] for name, values in mass.items()}
    print(f"{len(mass['policy: action -> noise frames'])} windows; uniform attention: "
          + ", ".join(f"{k} {v:.3f}" for k, v in uniform.items()))
    print("layer  " + "  ".join(f"{name:>40s}" for name in table))
    for layer in range(len(net.blocks)):
        print(f"{layer:5d}  " + "  ".join(f"{table[name][layer]:40.4f}" for name in table))
    if args.out:
        Path(args.out).write_text(json.dumps({
            "command": "python bench/action_image_attention.py --checkpoint ... --dataset ..."
                       + (f" --first-windows {args.first_windows}" if args.first_windows else ""),
            "checkpoint": args.checkpoint, "dataset": args.dataset, "windows": len(mass["policy: action -> noise frames"]),
            "uniform": uniform, "mass_per_layer": table, **provenance(started)}, indent=2))


if __name__ == "__main__":
    main()
