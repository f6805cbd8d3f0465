"""Trajectory tracking with inverse dynamics vs the policy (the paper's Table III), in one process.

For each held-out reference (the scripted expert on a seed no demo used, recorded step by step),
the sim is reset to that reference's initial state and driven twice by the same checkpoint:

* inverse dynamics: every ``execute_steps`` steps, ``infer_actions`` from the two latest frames
  the sim rendered to the reference's frames ``action_horizon`` and ``action_horizon + 1`` steps
  ahead (the next frames of a training sample; clamped to the reference's last frame);
* policy: ``predict_actions`` from the same current frames, blind to the reference.

Actions are applied by bench/inprocess_rollouts.py's loop (per-step clamps, pose_target mode). Reported
per mode: success within the reference's own length (the paper's "trajectory length" limit) and
within ``--max-steps``, with 95% Wilson intervals, the end-effector tracking error (the mean
distance to the reference's end-effector position at the same step, over the reference's length),
and open-loop along the reference itself (its own frames, no closed loop): the translation error of
each chunk's executed actions against the expert's, and how often the gripper command agrees.

    MUJOCO_GL=osmesa python bench/inverse_dynamics_tracking.py --checkpoint runs/demo/train/checkpoint \\
        [--references 30] [--first-seed 7000] [--max-steps 100] [--out bench/results/id_tracking.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from inprocess_rollouts import MAX_ROTATION, MAX_TRANSLATION, rollout  # bench/, this script's folder
from uwm_core import WorldModel
from uwm_core.spatial import proprio_state
from uwm_ros.sim.expert import ScriptedExpert, observe
from uwm_ros.sim.franka_env import SimFranka
from uwm_ros.sim.metrics import wilson_interval


def record_reference(sim: SimFranka, seed: int, max_steps: int, expert: ScriptedExpert | None = None) -> dict | None:
    """The (scripted) expert's episode from ``seed``: the frame, end-effector position and
    proprioceptive state before each step and after the last, and its actions; None when it fails."""
    sim.reset(seed)
    expert = expert or ScriptedExpert("lift", MAX_TRANSLATION, MAX_ROTATION)
    gripper = 0.0
    frames, positions, states, actions = [sim.render()], [sim.ee_pose()[0]], [proprio_state(*sim.ee_pose(), 0.0)], []
    for _ in range(max_steps):
        action = expert.act(observe(sim), sim.target)
        sim.apply_delta(action[:6])
        gripper = float(action[6])
        sim.set_gripper(gripper)
        sim.step()
        frames.append(sim.render())
        positions.append(sim.ee_pose()[0])
        states.append(proprio_state(*sim.ee_pose(), gripper))
        actions.append(np.asarray(action, dtype=np.float64))
        if sim.success():
            return {"seed": seed, "frames": frames, "positions": np.array(positions), "states": np.array(states),
                    "actions": np.array(actions)}
    return None


def future_frames(wm: WorldModel, reference: dict, t: int) -> dict:
    """The reference's frames that follow a chunk starting at step t (``action_horizon`` and
    ``action_horizon + 1`` steps ahead, as training samples' next frames), clamped to its end."""
    last = len(reference["frames"]) - 1
    ahead = [min(t + wm.action_horizon + k, last) for k in range(wm.obs_horizon)]
    return {cam: np.stack([reference["frames"][i][cam] for i in ahead]) for cam in wm.cameras}


def open_loop_errors(wm: WorldModel, reference: dict, other: dict) -> dict:
    """Along the reference itself (its own frames and states), the error of the first ``execute_steps``
    actions of each chunk against the expert's: translation in mm per action, gripper agreement.
    'inverse_dynamics_other_goal' is given ``other`` reference's future frames instead: if it does as
    well, inverse dynamics does not use the future frames."""
    frames, length, seed = reference["frames"], len(reference["actions"]), reference["seed"]
    errors = {"inverse_dynamics": ([], []), "inverse_dynamics_other_goal": ([], []), "policy": ([], [])}

    for t in range(0, length, wm.execute_steps):
        now = [max(t - wm.obs_horizon + 1 + k, 0) for k in range(wm.obs_horizon)]
        images = {cam: np.stack([frames[i][cam] for i in now]) for cam in wm.cameras}
        state = reference["states"][now] if wm.state_dim else None
        chunks = {"inverse_dynamics": wm.infer_actions(images, future_frames(wm, reference, t), seed=seed * 1000 + t, state=state),
                  "inverse_dynamics_other_goal": wm.infer_actions(images, future_frames(wm, other, t), seed=seed * 1000 + t,
                                                                  state=state),
                  "policy": wm.predict_actions(images, seed=seed * 1000 + t, state=state)}
        expert = reference["actions"][t:t + wm.execute_steps]
        for mode, chunk in chunks.items():
            errors[mode][0].extend(np.linalg.norm(chunk[:len(expert), :3] - expert[:, :3], axis=1) * 1000)
            errors[mode][1].extend((chunk[:len(expert), 6] > 0.5) == (expert[:, 6] > 0.5))
    return {mode: (float(np.mean(mm)), float(np.mean(agree))) for mode, (mm, agree) in errors.items()}


def track(wm: WorldModel, sim: SimFranka, reference: dict, mode: str, execute_steps: int, max_steps: int) -> dict:
    """Drive the sim from the reference's initial state with ``mode`` ('inverse_dynamics' or 'policy')."""
    seed, length = reference["seed"], len(reference["frames"]) - 1

    def towards_the_reference(images, state, step):
        return wm.infer_actions(images, future_frames(wm, reference, step), seed=seed * 1000 + step, state=state)

    success, steps, positions = rollout(wm, sim, seed, execute_steps, max_steps,
                                        towards_the_reference if mode == "inverse_dynamics" else None)
    # tracking error over the reference's length (an early success holds its last position)
    reached = np.array(positions + [positions[-1]] * max(0, length + 1 - len(positions)))[:length + 1]
    error = np.linalg.norm(reached - reference["positions"], axis=1)
    return {"seed": seed, "reference_length": length, "success_step": steps if success else None,
            "tracking_error_mm": float(error.mean() * 1000)}


def summary(runs: list[dict], max_steps: int) -> dict:
    within_length = sum(r["success_step"] is not None and r["success_step"] <= r["reference_length"] for r in runs)
    within_limit = sum(r["success_step"] is not None for r in runs)
    out = {}
    for name, wins in (("success_within_reference_length", within_length), (f"success_within_{max_steps}_steps",
                                                                             within_limit)):
        low, high = wilson_interval(wins, len(runs))
        out[name] = {"successes": wins, "episodes": len(runs), "wilson95": [round(low, 3), round(high, 3)]}
    errors = [r["tracking_error_mm"] for r in runs]
    out["tracking_error_mm"] = {"mean": round(float(np.mean(errors)), 1), "median": round(float(np.median(errors)), 1)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--references", type=int, default=30, help="held-out expert trajectories to track")
    parser.add_argument("--first-seed", type=int, default=7000, help="reference seeds from here (demos: 0..)")
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="JSON results file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    wm = WorldModel.from_checkpoint(args.checkpoint)
    sim = SimFranka("lift", width=96, height=96)
    references, seed = [], args.first_seed
    try:
        while len(references) < args.references:
            reference = record_reference(sim, seed, args.max_steps)
            if reference is not None:
                references.append(reference)
            seed += 1
        results = {}
        open_loop = [open_loop_errors(wm, reference, references[(k + 1) % len(references)])
                     for k, reference in enumerate(references)]
        results["open_loop"] = {mode: {"translation_error_mm": round(float(np.mean([e[mode][0] for e in open_loop])), 2),
                                       "gripper_agreement": round(float(np.mean([e[mode][1] for e in open_loop])), 3)}
                                for mode in open_loop[0]}
        print(f"open loop along the references: {json.dumps(results['open_loop'])}", flush=True)
        for mode in ("inverse_dynamics", "policy"):
            runs = [track(wm, sim, reference, mode, wm.execute_steps, args.max_steps) for reference in references]
            results[mode] = {**summary(runs, args.max_steps), "runs": runs}
            head = {k: v for k, v in results[mode].items() if k != "runs"}
            print(f"{mode}: {json.dumps(head)}", flush=True)
    finally:
        sim.close()
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    record = {"command": "python bench/inverse_dynamics_tracking.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
              "commit": commit, "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
              "torch threads", "reference_seeds": [r["seed"] for r in references],
              "reference_lengths": [len(r["frames"]) - 1 for r in references], "execute_steps": wm.execute_steps,
              "action_horizon": wm.action_horizon, "wall_s": round(time.monotonic() - started), **results}
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
