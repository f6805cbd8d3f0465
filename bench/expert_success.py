"""Success rate of the scripted sim expert over many seeds (in-process, same code as the ROS node).

    .venv/bin/python bench/expert_success.py                      # lift and stack, seeds 0..49
    .venv/bin/python bench/expert_success.py --tasks lift --seeds 10 --render   # sim step rate with cameras
    .venv/bin/python bench/expert_success.py --tasks lift --seeds 10 --render --full-render

Each episode resets the sim with its seed and runs ScriptedExpert (uwm_ros.sim.expert) until the
task succeeds or the task's step limit; the expert's deltas are composed onto the sim's target as
in pose_target mode. Without --render no camera is drawn (the expert reads object poses only);
with --render the three default cameras are rendered every step, to time the full sim step.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from tqdm import tqdm

from uwm_ros.sim.expert import ScriptedExpert, run_episode
from uwm_ros.sim.franka_env import DEFAULT_CAMERAS, SimFranka
from uwm_ros.sim.metrics import wilson_interval
from uwm_ros.sim.tasks import TASKS


class RenderingSim(SimFranka):
    """A SimFranka that renders its cameras after every step, as the sim node does."""

    def step(self):
        super().step()
        self.render()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", type=int, default=50, help="number of seeds (episodes) per task")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--render", action="store_true", help="render the default cameras every step")
    parser.add_argument("--size", type=int, default=96, help="camera resolution with --render")
    parser.add_argument("--full-render", action="store_true", help="robosuite's full meshes and textures "
                        "instead of the sim node's default fast rendering")
    args = parser.parse_args(argv)

    for task in args.tasks:
        sim_class = RenderingSim if args.render else SimFranka
        sim = sim_class(task, cameras=DEFAULT_CAMERAS if args.render else {}, width=args.size, height=args.size,
                        fast_render=not args.full_render)
        expert = ScriptedExpert(task)
        results, steps, started = [], 0, time.perf_counter()
        for seed in tqdm(range(args.first_seed, args.first_seed + args.seeds), desc=task, unit="episode"):
            success, length = run_episode(sim, expert, seed)
            results.append((seed, success, length))
            steps += length
        elapsed = time.perf_counter() - started
        sim.close()
        rendering = (f"rendering {len(DEFAULT_CAMERAS)} cameras at {args.size}x{args.size}, "
                     f"{'full' if args.full_render else 'fast'} render" if args.render else "no rendering")
        successes = sum(success for _, success, _ in results)
        low, high = wilson_interval(successes, len(results))
        lengths = [length for _, success, length in results if success]
        print(f"{task}: success {successes}/{len(results)} = {successes / len(results):.1%} "
              f"(95% Wilson interval {low:.1%}..{high:.1%}); mean steps of successes "
              f"{np.mean(lengths) if lengths else float('nan'):.1f}; {steps / elapsed:.1f} sim steps/s "
              f"({rendering})")
        failed = [seed for seed, success, _ in results if not success]
        if failed:
            print(f"  failed seeds: {failed}")


if __name__ == "__main__":
    main()
