"""UWM vs Diffusion Policy vs UWM cotrained on action-free video, in the simulated Franka.

    .venv/bin/python bench/uwm_vs_dp.py --plan                    # what each scale runs; runs nothing
    .venv/bin/python bench/uwm_vs_dp.py --scale smoke             # about an hour on a 2-core CPU
    .venv/bin/python bench/uwm_vs_dp.py --scale cpu               # the demo's model: under 3 hours on 2 cores
    .venv/bin/python bench/uwm_vs_dp.py --scale small             # a day on a CPU, about 2 hours on one GPU
    .venv/bin/python bench/uwm_vs_dp.py --scale paper --device cuda   # Table V sizes: GPU days

The paper's pretrain-then-finetune protocol (Sections IV-A, IV-B), on scripted sim demonstrations
recorded and converted by the real pipeline (uwm_ros.tools.sim_demos: sim + expert + recorder over ROS 2,
then uwm-bag2dataset):

- pretraining data: a multitask robot dataset with actions (the scale's demos of lift and stack);
- action-free video: further stack episodes with their actions removed (the "other task" videos);
- finetuning data: a few demos of the target task, lift, from seeds none of the above use;
- evaluation: uwm-eval-sim on lift, seeds from 1000 (never seen in training), success with its
  95% Wilson interval.

Arms (same backbone, same data, same steps; only the switch differs):

- ``uwm``          uwm-train pretrain (model.variant=uwm), then finetune
- ``dp``           the Diffusion Policy baseline: the same transformer without image diffusion
                   (model.variant=dp, paper IV-A), pretrain then finetune
- ``uwm_cotrain``  uwm-train cotrain: the robot data plus the action-free videos, then finetune
- ``uwm_no_registers``  ``uwm`` with ``model.num_registers=0`` (paper Table VII), pretrain then finetune

Every stage is a real command (uwm-train, uwm-eval-sim) logged under ``--out``; a stage whose
output exists is skipped, so an interrupted run continues where it stopped (``--fresh`` starts
over). Results go to ``bench/results/uwm_vs_dp_<scale>.json`` and a section is appended to
``bench/results/uwm_vs_dp.md``, with the command, machine, commit and settings.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from scipy.stats import binomtest

from uwm_ros.tools.demo import eval_argv, machine, train_argv
from uwm_ros.tools.processes import (OrchestrationError, console_script, cooperative_threads, isolate_ros_graph,
                                    run_logged)

RESULTS = Path(__file__).resolve().parent / "results"
TARGET, OTHER = "lift", "stack"
ARMS = ("uwm", "dp", "uwm_cotrain", "uwm_no_registers")
SEEDS = {"pretrain": 0, "video": 10_000, "finetune": 20_000, "eval": 1000}  # disjoint seed ranges


@dataclass(frozen=True)
class Scale:
    pretrain_demos: dict  # task -> robot episodes with actions
    video_demos: dict  # task -> action-free episodes (cotraining)
    finetune_demos: int  # target-task episodes
    eval_episodes: int
    pretrain_steps: int
    finetune_steps: int
    train: dict  # uwm-train overrides shared by every run (model preset, batch, lr, ...)
    image_size: int  # sim rendering (and dataset frame) size
    eval_max_steps: int | None = None  # None: the task's limit
    # Evaluation paced by the wall clock, as the demo evaluates (False: lockstep, where the arm moves
    # on while a chunk is computed; config/demo.yaml measures the difference).
    eval_real_time: bool = False
    note: str = ""
    finetune: dict = field(default_factory=dict)  # extra overrides of the finetuning runs


SCALES = {
    "smoke": Scale(
        pretrain_demos={TARGET: 6, OTHER: 6}, video_demos={OTHER: 6}, finetune_demos=4, eval_episodes=6,
        pretrain_steps=150, finetune_steps=60, image_size=96, eval_max_steps=60,
        train={"model_preset": "small", "model.image_size": 32, "model.resize_shape": [32, 32],
               "model.vae.fit_steps": 100, "batch_size": 16, "lr": 3.0e-4, "color_jitter": None, "num_workers": 0,
               "val_ratio": 0.0, "eval_every": 0, "eval_samples": 4, "log_every": 10},
        finetune={"warmup_steps": 6},
        note="checks the protocol end to end; the models are far too undertrained for the success rates to "
             "separate the arms"),
    "cpu": Scale(
        pretrain_demos={TARGET: 25, OTHER: 25}, video_demos={OTHER: 50}, finetune_demos=20, eval_episodes=100,
        pretrain_steps=6000, finetune_steps=2000, image_size=96, eval_max_steps=100, eval_real_time=True,
        train={"model_preset": "small", "model.image_size": 32, "model.resize_shape": [32, 32],
               "model.execute_steps": 4, "model.vae.fit_steps": 100, "batch_size": 16,
               "lr": 3.0e-4, "color_jitter": None, "num_workers": 0, "val_ratio": 0.0, "eval_every": 0,
               "eval_samples": 4, "log_every": 50},
        finetune={"warmup_steps": 100},
        note="the default demo's model and training settings (config/demo.yaml) without proprioception (the paper "
             "conditions on images only, and action-free videos have no robot state) on 50 multitask demos; "
             "about 2 h 20 min on 2 cores, measured: recording 6 min, per arm pretraining 13-14 min, finetuning 4.5 min, "
             "evaluation 16 min (real time)"),
    "small": Scale(
        pretrain_demos={TARGET: 50, OTHER: 50}, video_demos={OTHER: 100}, finetune_demos=10, eval_episodes=50,
        pretrain_steps=5000, finetune_steps=2000, image_size=96,
        train={"model_preset": "small", "batch_size": 32, "lr": 1.0e-4, "num_workers": 2, "val_ratio": 0.05,
               "eval_every": 1000, "log_every": 50},
        finetune={"warmup_steps": 200},
        note="the small preset (64x64) on 100 multitask demos; about 2 hours on one GPU"),
    "paper": Scale(
        pretrain_demos={TARGET: 500, OTHER: 500}, video_demos={OTHER: 1000}, finetune_demos=50, eval_episodes=100,
        pretrain_steps=100_000, finetune_steps=10_000, image_size=224,
        train={"model_preset": "paper", "num_workers": 8},
        note="Table V: the paper preset (SDXL VAE and ImageNet ResNet-18 weights must be reachable), "
             "batch 36, 100K pretraining and 10K finetuning steps; the recipes' own learning-rate schedules"),
}


@dataclass
class ArmResult:
    arm: str
    episodes: int = 0
    successes: int = 0
    success_rate: float = 0.0
    wilson_95: list = field(default_factory=list)
    mean_episode_length: float | None = None
    seconds: dict = field(default_factory=dict)  # stage -> seconds (None: a run from before they were kept)
    eval_report: str = ""
    outcomes: dict = field(default_factory=dict)  # evaluation seed -> success


def paired_comparison(a: ArmResult, b: ArmResult) -> dict:
    """Exact McNemar test on the seeds both arms were evaluated on: every arm meets the same
    initial states, so only the seeds where exactly one arm succeeds say which is better."""
    seeds = sorted(set(a.outcomes) & set(b.outcomes))
    only_a = sum(a.outcomes[s] and not b.outcomes[s] for s in seeds)
    only_b = sum(b.outcomes[s] and not a.outcomes[s] for s in seeds)
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"arms": [a.arm, b.arm], "seeds": len(seeds), f"only_{a.arm}": only_a, f"only_{b.arm}": only_b,
            "mcnemar_exact_p": round(float(p), 4)}


class Bench:
    def __init__(self, scale_name: str, out: Path, device: str, arms: list[str], say=print):
        self.name, self.scale, self.out, self.device, self.arms, self.say = (
            scale_name, SCALES[scale_name], out, device, arms, say)
        self.data, self.runs, self.logs = out / "data", out / "runs", out / "logs"

    # ------------------------------------------------------------------ the plan
    def plan(self) -> list[str]:
        s, lines = self.scale, []
        lines.append(f"scale {self.name}: {s.note}")
        lines.append(f"  record + convert (sim {s.image_size}px): pretrain {s.pretrain_demos} -> data/pretrain; "
                     f"video {s.video_demos} (actions removed) -> data/video; finetune {TARGET} "
                     f"x{s.finetune_demos} -> data/finetune")
        for arm in self.arms:
            recipe, overrides = self._pretrain_overrides(arm)
            for argv in (train_argv(recipe, overrides), train_argv("finetune", self._finetune_overrides(arm)),
                         eval_argv(self.runs / f"{arm}_finetune" / "checkpoint", TARGET, self.out / "eval" / arm,
                                   **self._eval_options())):
                lines.append(f"  {arm}: {Path(argv[0]).name} " + " ".join(argv[1:]))
        return lines

    def _common(self) -> dict:
        return {**self.scale.train, "out_dir": str(self.runs), "device": self.device}

    def _pretrain_overrides(self, arm: str) -> tuple[str, dict]:
        overrides = {**self._common(), "datasets": [str(self.data / "pretrain")], "run_name": f"{arm}_pretrain",
                     "num_steps": self.scale.pretrain_steps, "save_every": self.scale.pretrain_steps,
                     "model.variant": "dp" if arm == "dp" else "uwm"}
        if arm == "uwm_cotrain":
            return "cotrain", {**overrides, "video_datasets": [str(self.data / "video")]}
        if arm == "uwm_no_registers":
            overrides["model.num_registers"] = 0  # finetuning keeps the pretrained model's configuration
        return "pretrain", overrides

    def _finetune_overrides(self, arm: str) -> dict:
        common = {k: v for k, v in self._common().items() if k != "model_preset" and not k.startswith("model.")}
        return {**common, **self.scale.finetune, "init_from": str(self.runs / f"{arm}_pretrain" / "checkpoint"),
                "datasets": [str(self.data / "finetune")], "run_name": f"{arm}_finetune",
                "num_steps": self.scale.finetune_steps, "save_every": self.scale.finetune_steps}

    def _eval_options(self) -> dict:
        s = self.scale
        return {"episodes": s.eval_episodes, "first_seed": SEEDS["eval"], "max_steps": s.eval_max_steps,
                "video_episodes": 2, "image_size": s.image_size, "device": self.device, "real_time": s.eval_real_time}

    # ------------------------------------------------------------------ data
    def prepare_data(self) -> dict:
        from uwm_ros.tools.sim_demos import convert_bags, record_demos

        s, seconds = self.scale, {}
        sets = {"pretrain": (s.pretrain_demos, SEEDS["pretrain"]), "video": (s.video_demos, SEEDS["video"]),
                "finetune": ({TARGET: s.finetune_demos}, SEEDS["finetune"])}
        for name, (demos, first_seed) in sets.items():
            dataset = self.data / name
            if (dataset / "zarr.json").exists() and _episodes(dataset) == sum(demos.values()):
                self.say(f"data/{name}: present ({_episodes(dataset)} episodes)")
                continue
            started = time.monotonic()
            bag_dirs = []
            for task, count in demos.items():
                bags = self.data / "bags" / f"{name}_{task}"
                shutil.rmtree(bags, ignore_errors=True)
                self.say(f"data/{name}: recording {count} {task} demos (seeds {first_seed}..)")
                episodes = record_demos(bags, task, count, first_seed, self.logs / "record" / f"{name}_{task}",
                                        image_size=s.image_size, say=self.say)
                failed = [e.seed for e in episodes if not e.success]
                if failed:  # the expert is >90% reliable: replace failures rather than skew the counts
                    raise OrchestrationError(f"the scripted expert failed {task} seeds {failed}; rerun with other "
                                             f"seeds (SEEDS in {__file__})")
                bag_dirs.append(bags)
            target = self.data / f"{name}_actions" if name == "video" else dataset
            for path in {target, dataset}:
                shutil.rmtree(path, ignore_errors=True)
            convert_bags(bag_dirs, target, self.logs / f"convert_{name}", self.logs / f"convert_{name}.log")
            if name == "video":
                action_free_copy(target, dataset)
                shutil.rmtree(target)
            seconds[name] = round(time.monotonic() - started, 1)
        return seconds

    # ------------------------------------------------------------------ one arm
    def run_arm(self, arm: str) -> ArmResult:
        result = ArmResult(arm)
        recipe, overrides = self._pretrain_overrides(arm)
        stages = [("pretrain", recipe, overrides), ("finetune", "finetune", self._finetune_overrides(arm))]
        for stage, recipe, overrides in stages:
            run_dir = self.runs / overrides["run_name"]
            if (run_dir / "done").exists():
                self.say(f"{arm} {stage}: present ({run_dir})")
                result.seconds[stage] = stage_seconds(run_dir / "done")
                continue
            started = time.monotonic()
            if (run_dir / "checkpoint" / "training_state.pt").exists():
                self.say(f"{arm} {stage}: resuming {run_dir}")
                argv = [console_script("uwm-train"), f"resume={run_dir}"]
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
                self.say(f"{arm} {stage}: uwm-train --config {recipe} ({overrides['num_steps']} steps)")
                argv = train_argv(recipe, overrides)
            run_logged(f"uwm-train ({arm} {stage})", argv, self.logs / f"{arm}_{stage}.log", say=self.say,
                       heartbeat_s=60.0)
            result.seconds[stage] = round(time.monotonic() - started, 1)
            (run_dir / "done").write_text(json.dumps({"seconds": result.seconds[stage]}) + "\n")
        eval_dir = self.out / "eval" / arm
        if not (eval_dir / "eval.json").exists():
            self.say(f"{arm} evaluate: {self.scale.eval_episodes} episodes of {TARGET}")
            run_logged(f"uwm-eval-sim ({arm})", eval_argv(self.runs / f"{arm}_finetune" / "checkpoint", TARGET,
                                                           eval_dir, **self._eval_options()),
                       self.logs / f"{arm}_eval.log", say=self.say, heartbeat_s=30.0)
        report = json.loads((eval_dir / "eval.json").read_text())
        result.seconds["evaluate"] = round(sum(report["timings"].values()), 1)
        result.outcomes = {e["seed"]: e["success"] for e in report["episode_results"]}
        result.episodes, result.successes = report["episodes"], report["successes"]
        result.success_rate, result.wilson_95 = report["success_rate"], report["wilson_95"]
        result.mean_episode_length, result.eval_report = report["mean_episode_length"], str(eval_dir / "eval.json")
        return result


def stage_seconds(done: Path) -> float | None:
    """The seconds a finished stage took, kept in its ``done`` file (None: written before they were)."""
    try:
        return json.loads(done.read_text())["seconds"]
    except (ValueError, KeyError, TypeError):
        return None


def _episodes(dataset: Path) -> int:
    from uwm_core.data import open_dataset

    return open_dataset(dataset).num_episodes


def action_free_copy(src: Path, dst: Path) -> None:
    """The episodes of ``src`` as action-free video episodes in a new dataset ``dst``."""
    from uwm_core.data import DatasetWriter, open_dataset

    ds = open_dataset(src)
    with DatasetWriter(dst, cameras=list(ds.cameras), fps=ds.fps, action_dim=ds.action_dim) as writer:
        for i in range(ds.num_episodes):
            episode = ds.episode(i)
            writer.add_episode(frames=episode.frames, actions=None, task=episode.task,
                               metadata={**episode.metadata, "actions_removed": True})


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(bench: Bench, results: list[ArmResult], data_seconds: dict, command: str, started_at: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    record = {"benchmark": "uwm_vs_dp", "scale": bench.name, "command": command, "started_at": started_at,
              "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
              "machine": machine(), "device": bench.device,
              "settings": asdict(bench.scale), "target_task": TARGET, "seeds": SEEDS, "out": str(bench.out),
              "data_seconds": data_seconds, "arms": [asdict(r) for r in results],
              "paired": [paired_comparison(a, b) for i, a in enumerate(results) for b in results[i + 1:]]}
    path = RESULTS / f"uwm_vs_dp_{bench.name}.json"
    path.write_text(json.dumps(record, indent=2))
    m = record["machine"]
    lines = [f"## {bench.name} scale, {record['finished_at']}", "",
             f"`{command}` at commit {record['commit']} on {m['cpu_model']} ({m['cpus']} CPUs"
             f"{', ' + m['cuda'] if m['cuda'] else ''}), device {bench.device}, torch {m['torch']}. "
             f"{bench.scale.note}.", "",
             f"Pretraining: {bench.scale.pretrain_demos} demos, {bench.scale.pretrain_steps} steps; cotraining videos: "
             f"{bench.scale.video_demos}; finetuning: {bench.scale.finetune_demos} {TARGET} demos, "
             f"{bench.scale.finetune_steps} steps; evaluation: {TARGET}, seeds {SEEDS['eval']}.., "
             f"limit {bench.scale.eval_max_steps or 'the task default'} steps.", "",
             "| arm | success | rate | 95% Wilson interval | mean episode length | train + eval seconds |",
             "|---|---|---|---|---|---|"]
    for r in results:
        seconds = "?" if None in r.seconds.values() else f"{sum(r.seconds.values()):.0f}"
        lines.append(f"| {r.arm} | {r.successes}/{r.episodes} | {r.success_rate:.1%} | "
                     f"{r.wilson_95[0]:.1%}..{r.wilson_95[1]:.1%} | {r.mean_episode_length} | {seconds} |")
    lines += ["", "Paired on the evaluation seeds (exact McNemar test: seeds where only one arm succeeds):", "",
              "| arms | seeds | only the first | only the second | p |", "|---|---|---|---|---|"]
    for pair in record["paired"]:
        first, second = pair["arms"]
        lines.append(f"| {first} vs {second} | {pair['seeds']} | {pair['only_' + first]} | {pair['only_' + second]} | "
                     f"{pair['mcnemar_exact_p']} |")
    with open(RESULTS / "uwm_vs_dp.md", "a") as f:
        f.write("\n".join(lines) + "\n\n")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=list(SCALES), default="smoke", help="; ".join(
        f"{name}: {sum(s.pretrain_demos.values())} pretraining demos x {s.pretrain_steps} steps, "
        f"{s.finetune_demos} finetuning demos x {s.finetune_steps} steps, {s.eval_episodes} evaluation episodes per "
        f"arm ({s.note})" for name, s in SCALES.items()).replace("%", "%%"))  # argparse formats help with %
    parser.add_argument("--plan", action="store_true", help="print what every scale would run, then exit")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--out", help="work directory (default runs/bench_uwm_vs_dp/<scale>)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (training and the policy node)")
    parser.add_argument("--fresh", action="store_true", help="delete the work directory first")
    args = parser.parse_args(argv)
    if args.plan:
        for name in SCALES:
            print("\n".join(Bench(name, Path(args.out or f"runs/bench_uwm_vs_dp/{name}"), args.device,
                                  args.arms).plan()), end="\n\n")
        return 0
    out = Path(args.out or f"runs/bench_uwm_vs_dp/{args.scale}")
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    isolate_ros_graph()
    cooperative_threads()
    bench = Bench(args.scale, out, args.device, args.arms, say=lambda text: print(text, flush=True))
    print("\n".join(bench.plan()), flush=True)
    command = " ".join([Path(sys.argv[0]).name if sys.argv[0] else "uwm_vs_dp.py", *sys.argv[1:]])
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        data_seconds = bench.prepare_data()
        results = [bench.run_arm(arm) for arm in args.arms]
    except OrchestrationError as err:
        print(f"uwm_vs_dp: {err}", file=sys.stderr)
        return 1
    path = write_results(bench, results, data_seconds, f"bench/{command}", started_at)
    print(f"\nresults: {path}")
    for r in results:
        print(f"  {r.arm:12s} {r.successes}/{r.episodes} = {r.success_rate:.1%} "
              f"(95% Wilson {r.wilson_95[0]:.1%}..{r.wilson_95[1]:.1%}), mean length {r.mean_episode_length}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
