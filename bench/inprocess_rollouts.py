"""Closed-loop Lift rollouts of a checkpoint in one process: no ROS, no latency, one core's worth
of wall time per episode. For comparing training and execution settings quickly; the deployed
measurement is bench/demo_success.py (policy node against the sim node over ROS 2).

    MUJOCO_GL=osmesa python bench/inprocess_rollouts.py --checkpoint runs/demo/train/checkpoint \\
        [--episodes 40] [--execute-steps 8 4 2] [--first-seed 5000] [--max-steps 100]

Each episode resets the sim by seed, then repeats: sample an action chunk from the two latest
frame sets (and proprioceptive state, for a model trained with it, built as uwm-bag2dataset
stores it), apply its first ``execute_steps`` actions with the policy node's per-step clamps in
pose_target mode, one sim step each, until success or the step limit. Prints one line per
execute_steps setting: successes, Wilson interval, mean episode length.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from uwm_core import WorldModel
from uwm_core.spatial import clamp_delta, proprio_state
from uwm_ros.sim.franka_env import SimFranka
from uwm_ros.sim.metrics import wilson_interval

MAX_TRANSLATION, MAX_ROTATION = 0.02, 0.1  # config/policy.yaml's per-step clamps


def rollout(wm: WorldModel, sim: SimFranka, seed: int, execute_steps: int, max_steps: int,
            chunk_at=None) -> tuple[bool, int, list]:
    """One episode from ``seed``: (success, steps, end-effector position before each step and after
    the last). ``chunk_at(images, state, step)`` gives the action chunk; default: the policy."""
    chunk_at = chunk_at or (lambda images, state, step: wm.predict_actions(images, seed=seed * 1000 + step,
                                                                           state=state))
    sim.reset(seed)
    gripper = 0.0  # the command in force: open until the policy closes it
    frames, states, positions = [sim.render()], [proprio_state(*sim.ee_pose(), gripper)], [sim.ee_pose()[0]]
    step = 0
    while step < max_steps:
        latest = [max(len(frames) - wm.obs_horizon + k, 0) for k in range(wm.obs_horizon)]  # first frame repeated
        images = {cam: np.stack([frames[i][cam] for i in latest]) for cam in wm.cameras}
        state = np.stack([states[i] for i in latest]) if wm.state_dim else None
        for action in chunk_at(images, state, step)[:execute_steps]:
            sim.apply_delta(clamp_delta(action[:6], MAX_TRANSLATION, MAX_ROTATION))
            gripper = float(np.clip(action[6], 0.0, 1.0))
            sim.set_gripper(gripper)
            sim.step()
            step += 1
            frames.append(sim.render())
            states.append(proprio_state(*sim.ee_pose(), gripper))
            positions.append(sim.ee_pose()[0])
            if sim.success():
                return True, step, positions
            if step >= max_steps:
                break
    return False, step, positions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--execute-steps", type=int, nargs="+", default=None,
                        help="actions executed per chunk (default: the checkpoint's)")
    parser.add_argument("--first-seed", type=int, default=5000, help="seeds first..first+episodes-1 (demos: 0..)")
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wm = WorldModel.from_checkpoint(args.checkpoint)
    sim = SimFranka("lift", width=96, height=96)
    try:
        for execute_steps in args.execute_steps or [wm.execute_steps]:
            started, results = time.monotonic(), []
            for seed in range(args.first_seed, args.first_seed + args.episodes):
                results.append(rollout(wm, sim, seed, execute_steps, args.max_steps))
            wins = sum(ok for ok, _, _ in results)
            low, high = wilson_interval(wins, len(results))
            print(f"execute_steps {execute_steps}: {wins}/{len(results)} = {wins / len(results):.0%} (95% Wilson "
                  f"{low:.0%}..{high:.0%}), mean length {np.mean([n for _, n, _ in results]):.1f} steps, "
                  f"{time.monotonic() - started:.0f} s", flush=True)
    finally:
        sim.close()


if __name__ == "__main__":
    main()
