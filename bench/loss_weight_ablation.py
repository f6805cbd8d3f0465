"""The image-loss weight against the four modes of the tiny preset on the synthetic world.

    python bench/loss_weight_ablation.py [--weights 1 7 30] [--seeds 0 1] [--threads 2] \
        [--out bench/results/loss_weight_ablation.json]

Each run is the one of tests/train/test_learning.py (tiny preset, synthetic world of 400 episodes,
1000 steps, batch 32, lr 1e-3; the training seed varied) with ``model.image_loss_weight`` set,
evaluated on the same 64 held-out starts with that test's measures:

* policy: share of samples committed to a mode, share heading down (0.5 is the expert's);
* inverse dynamics: direction right, chunk error against the spread of the true chunks;
* forward dynamics: last-frame pixel MSE against video samples and copying the current frame,
  median disc error, direction right for the true and for the mirrored chunks;
* video: share of samples within 2 px of a frame some expert chunk produces.

About 3 minutes per run on 2 idle cores. Runs are kept in --work and reused. 7 is the weight
bench/loss_balance.py measures for this world (6.0: action / latent-motion variance per element).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "train")]  # the synthetic world and the learning test
import test_learning as learning  # noqa: E402
from doubles.synthetic_world import generate_episodes, write_synthetic_dataset  # noqa: E402
from provenance import provenance  # noqa: E402  (bench/)
from uwm_core import WorldModel  # noqa: E402
from uwm_core.train import load_train_config, train  # noqa: E402

def trained(work: Path, data: Path, image_weight: float, seed: int) -> WorldModel:
    run = f"w{image_weight:g}_seed{seed}"
    checkpoint = work / run / "checkpoint"
    if not checkpoint.exists():
        print(f"training image_loss_weight={image_weight:g}, seed {seed} -> {work / run}", flush=True)
        train(load_train_config("pretrain", [
            "model_preset=tiny", f"datasets=[{data}]", "model.resize_shape=[32,32]", "batch_size=32", "num_workers=1",
            "num_steps=1000", "lr=1e-3", "model.vae.fit_steps=300", "color_jitter=null", "val_ratio=0",
            "eval_every=0", "save_every=100000", "log_every=100", f"out_dir={work}", f"run_name={run}", f"seed={seed}",
            f"model.image_loss_weight={image_weight}"]))
    return WorldModel.from_checkpoint(checkpoint)


def four_modes(wm: WorldModel) -> dict[str, float]:
    """test_learning.py's measures on its 64 held-out starts (episode seed 1000)."""
    L, Ta = learning, wm.action_horizon
    episodes = generate_episodes(L.TEST_EPISODES, seed=1000, max_steps=L.MAX_STEPS)
    start = {"top": np.stack([ep.frames["top"][[0, 0]] for ep in episodes])}
    following = {"top": np.stack([ep.frames["top"][np.minimum([Ta, Ta + 1], L.MAX_STEPS - 1)] for ep in episodes])}
    actions = np.zeros((L.TEST_EPISODES, Ta, 2), np.float32)
    for chunk, ep in zip(actions, episodes):
        chunk[:L.MAX_STEPS] = ep.actions[:Ta]
    true = L.chunk_dy(actions)
    r = {}
    dy = L.chunk_dy(wm.predict_actions(start, seed=0))
    r["policy committed"] = np.mean(np.abs(dy) > L.SPEED_RANGE[0] * min(Ta, L.MAX_STEPS) / 2)
    r["policy down"] = np.mean(dy > 0)
    inferred = L.chunk_dy(wm.infer_actions(start, following, seed=0))
    r["inverse dynamics direction right"] = np.mean(np.sign(inferred) == np.sign(true))
    r["inverse dynamics chunk error / spread"] = np.abs(inferred - true).mean() / np.abs(true - true.mean()).mean()
    predicted, flipped = wm.predict_next_frames(start, actions, seed=0), L.mirrored(actions)
    video = wm.predict_video(start, seed=0)
    r["forward dynamics MSE / video MSE"] = L.pixel_mse(predicted, following) / L.pixel_mse(video, following)
    r["forward dynamics MSE / copy MSE"] = L.pixel_mse(predicted, following) / L.pixel_mse(start, following)
    r["forward dynamics disc error px"] = np.median(L.misses(L.disc_positions(predicted), L.disc_positions(following)))
    for label, chunks in (("forward dynamics direction right", actions), ("mirrored chunks", flipped)):
        frames = predicted if chunks is actions else wm.predict_next_frames(start, flipped, seed=0)
        moved = L.disc_positions(frames)[:, 1] - L.START_Y
        r[label] = np.mean(np.sign(moved) == np.sign(L.chunk_dy(chunks)))
    samples = L.disc_positions(video)
    dx, dyv = samples[:, 0] - L.WORLD / 2, samples[:, 1] - L.START_Y
    nearest = np.stack([np.clip(dx, *(L.MOVES * np.array(L.DRIFT_RANGE))),
                        np.sign(dyv) * np.clip(np.abs(dyv), *(L.MOVES * np.array(L.SPEED_RANGE)))], axis=-1)
    r["video within 2 px"] = np.mean(L.misses(np.stack([dx, dyv], axis=-1), nearest) < 2.0)
    return {k: round(float(v), 3) for k, v in r.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 7.0, 30.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="/tmp/uwm-loss-weight-ablation")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started, work = time.time(), Path(args.work)
    data = work / "world"
    if not data.exists():
        write_synthetic_dataset(data, learning.TRAIN_EPISODES, seed=0, max_steps=learning.MAX_STEPS, cameras=("top",))
    results = {}
    for weight in args.weights:
        for seed in args.seeds:
            results.setdefault(f"{weight:g}", {})[seed] = four_modes(trained(work, data, weight, seed))
            print(f"image_loss_weight {weight:g}, seed {seed}: {json.dumps(results[f'{weight:g}'][seed])}", flush=True)
    if args.out:
        report = {"command": "python bench/loss_weight_ablation.py --weights " + " ".join(f"{w:g}" for w in args.weights)
                             + " --seeds " + " ".join(map(str, args.seeds)),
                  "results_by_image_loss_weight": results, "threads": args.threads, **provenance(started)}
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
