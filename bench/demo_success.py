"""Does the default demo's policy work? Its success over 50 closed-loop episodes, with the interval.

    .venv/bin/uwm-demo --out runs/demo                         # the default demo (config/demo.yaml)
    .venv/bin/python bench/demo_success.py --demo runs/demo    # 50 Lift episodes (~25 min on 2 cores)

Runs ``uwm-eval-sim`` (the policy node against the simulated Franka over ROS 2, as the demo's own
evaluation does) on the demo's checkpoint, with the demo's episode limit and pacing (real time by
default), from seed 5000 on: the
demos use seeds demo_seed.., the demo's own evaluation evaluate.first_seed.. (config/demo.yaml),
so no evaluation episode starts where a training demo did. Writes bench/results/demo_default.json:
commit, machine, the demo run's wall seconds per stage, variant, steps, episode limit, episodes,
successes and the 95% Wilson interval.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from uwm_ros.tools.demo import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "demo_default.json"
FIRST_SEED = 5000


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", default="runs/demo", help="output directory of a uwm-demo run (default runs/demo)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--out", default=str(RESULTS), help=f"results file (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--precision", default="auto", help="the policy's inference precision (default auto, as "
                        "deployed: bf16 where native)")
    args = parser.parse_args(argv)
    demo = Path(args.demo)
    report = json.loads((demo / "report.json").read_text())
    settings = report["settings"]
    demo_seeds = range(settings["demo_seed"], settings["demo_seed"] + settings["demos"])
    own_eval = range(settings["evaluate"]["first_seed"], settings["evaluate"]["first_seed"] + settings["evaluate"]["episodes"])
    seeds = range(FIRST_SEED, FIRST_SEED + args.episodes)
    if set(seeds) & (set(demo_seeds) | set(own_eval)):
        sys.exit(f"evaluation seeds {seeds} overlap the demo's seeds {demo_seeds} / {own_eval}")
    checkpoint = demo / "train" / "checkpoint"
    max_steps = settings["evaluate"]["max_steps"]
    out = demo / (f"eval_{args.episodes}" + ("" if args.precision == "auto" else f"_{args.precision}"))
    command = [str(Path(sys.executable).parent / "uwm-eval-sim"), "--checkpoint", str(checkpoint), "--task",
               settings["task"], "--episodes", str(args.episodes), "--first-seed", str(FIRST_SEED), "--max-steps",
               str(max_steps), "--out", str(out), "--image-size", str(settings["image_size"]), "--video-episodes", "0",
               "--precision", args.precision]
    if settings["evaluate"].get("real_time"):
        command.append("--real-time")  # as the demo evaluates: paced by the wall clock
    print(" ".join(command), flush=True)
    started = time.monotonic()
    subprocess.run(command, check=True)
    evaluation = json.loads((out / "eval.json").read_text())
    model = yaml.safe_load((checkpoint / "config.yaml").read_text())
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {
        "command": f"python bench/demo_success.py --demo {args.demo} --episodes {args.episodes} "
                   f"--precision {args.precision}",
        "precision": args.precision,
        "demo_command": report["command"], "commit": commit, "machine": machine(),
        "demo_stage_seconds": {name: stage["seconds"] for name, stage in report["stages"].items()},
        "demo_total_seconds": report["total_seconds"],
        "variant": model["model"]["variant"], "train_steps": settings["train"]["overrides"]["num_steps"],
        "demos": settings["demos"], "demo_seeds": [demo_seeds.start, demo_seeds.stop - 1],
        "eval_seeds": [seeds.start, seeds.stop - 1], "max_steps": max_steps,
        "expert_median_steps": report["stages"]["record"]["median_steps"],
        "episodes": evaluation["episodes"], "successes": evaluation["successes"],
        "success_rate": evaluation["success_rate"], "wilson_95": evaluation["wilson_95"],
        "mean_episode_length": evaluation["mean_episode_length"], "real_time": evaluation["real_time"],
        "eval_seconds": round(time.monotonic() - started, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    low, high = result["wilson_95"]
    print(f"{result['successes']}/{result['episodes']} = {result['success_rate']:.0%} (95% Wilson {low:.0%}..{high:.0%}), "
          f"limit {max_steps} steps -> {args.out}")


if __name__ == "__main__":
    main()
