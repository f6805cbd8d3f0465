"""Can a policy see where the cube is? A linear probe of the demo's camera placements.

    MUJOCO_GL=osmesa python bench/camera_probe.py [--resets 100] [--size 32]

For each placement of the two scene cameras (the one in config/sim.yaml and earlier candidates)
the sim is reset ``--resets`` times (seeds 10000..), each camera rendered at 96 px and reduced to
the demo's training size as the model sees it, and encoded by the `small` preset's frozen random
ResNet-18. A 5-fold cross-validated ridge regression from the features to the cube's (x, y)
relative to the gripper prints its R² per axis: from the two scene views, and with the wrist view
too. An axis near 0 is one a policy on these cameras cannot localise the cube along.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml

from uwm_core.model.obs_encoder import ObservationEncoder
from uwm_core.processing import model_view
from uwm_ros.sim.franka_env import SimFranka

ROOT = Path(__file__).resolve().parents[1]
# scene_left placement [x, y, z, look_x, look_y, look_z] and field of view; scene_right mirrors y
EARLIER = {
    "rear-facing (until 2026-12)": ([0.87, 0.42, 0.37, 0.52, 0.0, 0.12], 55.0),
    "side": ([0.55, 0.40, 0.25, 0.52, 0.0, 0.09], 40.0),
}


def configured() -> tuple[list, float]:
    params = yaml.safe_load((ROOT / "config" / "sim.yaml").read_text())["/**"]["ros__parameters"]
    return params["scene_left_camera"], params["scene_camera_fovy_deg"]


def cross_validated_r2(features: np.ndarray, targets: np.ndarray, ridge: float = 10.0, folds: int = 5,
                       groups: np.ndarray | None = None) -> np.ndarray:
    """R² per target column of a ridge regression on standardised features, cross-validated in
    ``folds`` folds (by ``groups``, e.g. episodes, when given: no group in both train and test)."""
    fold_of = (np.arange(len(features)) if groups is None else np.asarray(groups)) % folds
    predicted = np.zeros_like(targets)
    for fold in range(folds):
        test = fold_of == fold
        mean, std = features[~test].mean(0), features[~test].std(0) + 1e-6
        x = (features[~test] - mean) / std
        offset = targets[~test].mean(0)
        if x.shape[1] <= x.shape[0]:
            weights = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ (targets[~test] - offset))
        else:  # more features than samples: the same ridge solution in its dual form
            weights = x.T @ np.linalg.solve(x @ x.T + ridge * np.eye(x.shape[0]), targets[~test] - offset)
        predicted[test] = ((features[test] - mean) / std) @ weights + offset
    return 1 - ((predicted - targets) ** 2).sum(0) / ((targets - targets.mean(0)) ** 2).sum(0)


def probe(left: list, fovy: float, resets: int, size: int, encoder) -> dict:
    right = [left[0], -left[1], *left[2:4], -left[4], left[5]]
    env = SimFranka("lift", width=96, height=96, scene_cameras={"scene_left": left, "scene_right": right},
                    scene_camera_fovy_deg=fovy)
    scene, everything, targets = [], [], []
    try:
        for seed in range(resets):
            env.reset(10_000 + seed)
            frames = env.render()
            targets.append((env.object_poses()[0][0] - env.ee_pose()[0])[:2])
            with torch.no_grad():
                feats = {cam: encoder(model_view(image[None], (size, size), size)[:, None, None]).numpy()[0]
                         for cam, image in frames.items()}
            scene.append(np.concatenate([feats["left"], feats["right"]]))
            everything.append(np.concatenate([feats["left"], feats["right"], feats["wrist"]]))
    finally:
        env.close()
    targets = np.array(targets)
    return {"scene": cross_validated_r2(np.array(scene), targets),
            "with_wrist": cross_validated_r2(np.array(everything), targets), "target_std_m": targets.std(0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resets", type=int, default=100)
    parser.add_argument("--size", type=int, default=32, help="training image size (px)")
    args = parser.parse_args()
    torch.manual_seed(0)
    encoder = ObservationEncoder(None, 128).eval()  # the small preset's frozen random ResNet-18
    placements = {"config/sim.yaml": configured(), **EARLIER}
    for name, (left, fovy) in placements.items():
        r = probe(left, fovy, args.resets, args.size, encoder)
        print(f"{name:28s} R² x/y: scene views {r['scene'][0]:.2f}/{r['scene'][1]:.2f}, with wrist "
              f"{r['with_wrist'][0]:.2f}/{r['with_wrist'][1]:.2f} (cube offset std "
              f"{r['target_std_m'][0] * 100:.1f}/{r['target_std_m'][1] * 100:.1f} cm)", flush=True)


if __name__ == "__main__":
    main()
