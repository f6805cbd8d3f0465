"""Does inverse dynamics read the future frames when the demos make it worth it? (issue 19)

On the default demo, inverse dynamics ignores the future frames (bench/inverse_dynamics_tracking.py):
the scripted expert's next action follows from the current view and state. Here every demo starts
with a detour the current frames cannot predict: the hand first moves 10 cm to the left or to the
right (a fair coin per episode), then the expert lifts the cube as usual. Only the future frames
tell which way a demo goes. The script records such demos in-process (the sim at 96x96 pixels),
trains the default demo's model on them (same command as uwm-demo's train stage), then measures on
held-out detour references:

* first-chunk direction: how often the first ``execute_steps`` actions go the reference's way,
  for inverse dynamics (the reference's future frames), inverse dynamics given the future frames of
  a reference that went the other way, and the policy (a coin flip at best);
* the open-loop and closed-loop tracking of bench/inverse_dynamics_tracking.py.

    MUJOCO_GL=osmesa python bench/detour_inverse_dynamics.py [--work /tmp/uwm-detour] [--demos 50]
        [--steps 4000] [--references 50] [--train-override model.image_loss_weight=30] [--start-copies 9]
        [--no-tracking] [--out FILE]

Each stage is skipped when its output exists in --work (delete it to redo).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from inverse_dynamics_tracking import future_frames, open_loop_errors, record_reference, summary, track  # bench/
from inprocess_rollouts import MAX_ROTATION, MAX_TRANSLATION
from uwm_core import WorldModel
from uwm_core.data import DatasetWriter
from uwm_core.spatial import clamp_delta, delta_between
from uwm_ros.sim.expert import ScriptedExpert
from uwm_ros.sim.franka_env import SimFranka

DETOUR_M = 0.10
REACHED_M = 0.01
START_STEPS = 20  # --start-copies: the detour (5 steps) and the turn towards the cube, as short episodes


class DetourExpert(ScriptedExpert):
    """The scripted Lift expert after a sideways detour of DETOUR_M to ``side`` (+1 left, -1 right)."""

    def __init__(self, side: int):
        self.side = side
        super().__init__("lift", MAX_TRANSLATION, MAX_ROTATION)

    def reset(self) -> None:
        super().reset()
        self._via = None  # the detour's end; False once reached

    def act(self, obs, target=None) -> np.ndarray:
        if self._via is not False:
            position, quat = (obs.ee_position, obs.ee_quat) if target is None else target
            if self._via is None:
                self._via = np.asarray(obs.ee_position, float) + [0.0, self.side * DETOUR_M, 0.0]
            if np.linalg.norm(np.asarray(obs.ee_position) - self._via) > REACHED_M:
                delta = clamp_delta(delta_between(np.asarray(position), np.asarray(quat), self._via, np.asarray(quat)),
                                    MAX_TRANSLATION, MAX_ROTATION)
                return np.array([*delta, 0.0], dtype=np.float32)
            self._via = False
        return super().act(obs, target)


def side_of(seed: int) -> int:
    return 1 if np.random.default_rng(seed).random() < 0.5 else -1


def detour_references(sim: SimFranka, first_seed: int, count: int, max_steps: int = 100) -> list[dict]:
    references, seed = [], first_seed
    while len(references) < count:
        reference = record_reference(sim, seed, max_steps, DetourExpert(side_of(seed)))
        if reference is not None:
            references.append({**reference, "side": side_of(seed)})
        seed += 1
    return references


def record_dataset(path: Path, sim: SimFranka, demos: int, start_copies: int = 0) -> None:
    """``demos`` detour demos; with ``start_copies``, each demo's first START_STEPS steps also as that
    many more short episodes, so that windows where only the future tells the side are frequent."""
    references = detour_references(sim, 0, demos)
    cameras = list(references[0]["frames"][0])
    with DatasetWriter(path, cameras=cameras, fps=10, action_dim=7, state_dim=10) as writer:
        for reference in references:
            steps = len(reference["actions"])  # frames and states before each step
            for copy in range(1 + start_copies):
                end = steps if copy == 0 else min(START_STEPS, steps)
                writer.add_episode(
                    frames={cam: np.stack([f[cam] for f in reference["frames"][:end]]) for cam in cameras},
                    actions=reference["actions"][:end].astype(np.float32), task="lift",
                    state=reference["states"][:end].astype(np.float32),
                    metadata={"source": f"detour expert, seed {reference['seed']}, side {reference['side']}"
                                        + (f", start copy {copy}" if copy else "")})
    print(f"recorded {demos} detour demos into {path} (sides: {sum(r['side'] > 0 for r in references)} left)"
          + (f", each start also as {start_copies} short episodes" if start_copies else ""))


def train(dataset: Path, work: Path, steps: int, overrides: list[str]) -> Path:
    command = [str(Path(sys.executable).parent / "uwm-train"), "--config", "pretrain", "model_preset=small",
               "model.image_size=32", "model.resize_shape=[32, 32]", "model.use_state=true", "model.execute_steps=4",
               "model.vae.fit_steps=100", f"num_steps={steps}", "batch_size=16", "lr=0.0003", "color_jitter=null",
               "num_workers=0", "val_ratio=0.1", "log_every=50", "eval_every=1000", "eval_samples=16",
               f"datasets=[{dataset}]", f"out_dir={work}", "run_name=train", "device=cpu", *overrides]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return work / "train" / "checkpoint"


def first_chunk_direction(wm: WorldModel, references: list[dict]) -> dict:
    """How often the first executed actions go the reference's way (sign of their summed y motion)."""
    opposite = {side: [r for r in references if r["side"] != side] for side in (-1, 1)}
    right = {"inverse_dynamics": 0, "inverse_dynamics_other_way": 0, "policy": 0}
    for k, reference in enumerate(references):
        frames, seed = reference["frames"], reference["seed"]
        images = {cam: np.stack([frames[0][cam]] * wm.obs_horizon) for cam in wm.cameras}
        state = np.repeat(reference["states"][:1], wm.obs_horizon, axis=0) if wm.state_dim else None

        other = opposite[reference["side"]][k % len(opposite[reference["side"]])]
        chunks = {"inverse_dynamics": wm.infer_actions(images, future_frames(wm, reference, 0), seed=seed, state=state),
                  "inverse_dynamics_other_way": wm.infer_actions(images, future_frames(wm, other, 0), seed=seed, state=state),
                  "policy": wm.predict_actions(images, seed=seed, state=state)}
        for mode, chunk in chunks.items():
            right[mode] += int(np.sign(chunk[:wm.execute_steps, 1].sum()) == reference["side"])
    return {mode: f"{n}/{len(references)}" for mode, n in right.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/uwm-detour")
    parser.add_argument("--demos", type=int, default=50)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--references", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=7000)
    parser.add_argument("--train-override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more uwm-train overrides, e.g. model.image_loss_weight=30")
    parser.add_argument("--start-copies", type=int, default=0, help=f"also train on each demo's first {START_STEPS} "
                        "steps as this many more episodes (decision-point windows sampled more often)")
    parser.add_argument("--no-tracking", action="store_true", help="first chunk and open loop only (no closed loop)")
    parser.add_argument("--out", help="JSON results file")
    args = parser.parse_args()
    started = time.monotonic()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sim = SimFranka("lift", width=96, height=96)
    try:
        if not (work / "dataset").exists():
            record_dataset(work / "dataset", sim, args.demos, args.start_copies)
        checkpoint = work / "train" / "checkpoint"
        if not checkpoint.exists():
            train(work / "dataset", work, args.steps, args.train_override)
        torch.set_num_threads(2)
        wm = WorldModel.from_checkpoint(checkpoint)
        references = detour_references(sim, args.first_seed, args.references)
        results = {"first_chunk_direction_right": first_chunk_direction(wm, references)}
        print(f"first chunk goes the reference's way: {results['first_chunk_direction_right']}", flush=True)
        open_loop = [open_loop_errors(wm, r, references[(k + 1) % len(references)]) for k, r in enumerate(references)]
        results["open_loop"] = {mode: {"translation_error_mm": round(float(np.mean([e[mode][0] for e in open_loop])), 2),
                                       "gripper_agreement": round(float(np.mean([e[mode][1] for e in open_loop])), 3)}
                                for mode in open_loop[0]}
        print(f"open loop along the references: {json.dumps(results['open_loop'])}", flush=True)
        for mode in () if args.no_tracking else ("inverse_dynamics", "policy"):
            runs = [track(wm, sim, r, mode, wm.execute_steps, 100) for r in references]
            results[mode] = {**summary(runs, 100), "runs": runs}
            print(f"{mode}: {json.dumps({k: v for k, v in results[mode].items() if k != 'runs'})}", flush=True)
    finally:
        sim.close()
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    if args.out:
        record = {"command": "python bench/detour_inverse_dynamics.py " + " ".join(
                      f"--{k.replace('_', '-')}" + ("" if v is True else f" {' '.join(v) if isinstance(v, list) else v}")
                      for k, v in vars(args).items() if v not in (None, [], False)),
                  "commit": commit, "reference_seeds": [r["seed"] for r in references],
                  "reference_sides": [r["side"] for r in references], "wall_s": round(time.monotonic() - started),
                  **results}
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
