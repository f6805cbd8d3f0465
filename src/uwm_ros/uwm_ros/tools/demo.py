"""uwm-demo: the whole stack end to end in the simulated Franka, with no robot, data, GPU or downloads.

    uwm-demo                     # config/demo.yaml: about 10 minutes on a 2-core CPU
    uwm-demo --quick             # the same pipeline, tiny (the test suite runs it)
    uwm-demo --out runs/my_demo --demos 50 --train-steps 3000 --eval-episodes 20

Stages (each a real component, as a user would run it; each logs to <out>/logs/):

1. record    uwm-sim-node + uwm-sim-expert + uwm-recorder: scripted demonstrations, one rosbag2
             (MCAP) per episode in <out>/bags
2. convert   uwm-bag2dataset <out>/bags --out <out>/dataset
3. train     uwm-train --config config/train/pretrain.yaml (a small model, a short run) into
             <out>/train (checkpoint: <out>/train/checkpoint)
4. evaluate  uwm-eval-sim: the policy node against the sim over ROS 2, <out>/eval (video, PNG)

The report (paths of every artefact, timings per stage, success) is printed and written to
<out>/report.md and <out>/report.json. A failed stage stops the demo with a message naming the
stage and its log. Re-running with the same --out starts over: the outputs of the previous run
there are replaced (a directory that uwm-demo did not create is never touched).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from uwm_core.data import open_dataset
from uwm_core.durable import replace_file
from uwm_ros.sim.rendering import RenderingUnavailable, check_rendering
from uwm_ros.sim.tasks import get_task
from uwm_ros.tools.processes import (OrchestrationError, console_script, cooperative_threads, exclusive_threads_env,
                                     isolate_ros_graph, last_log_line, log_tail, ros_config_file, run_logged)
from uwm_ros.tools.sim_demos import convert_bags, record_demos

MARKER = ".uwm-demo"  # marks a directory as uwm-demo output (re-runs may replace its contents)
OUTPUTS = ("bags", "dataset", "train", "eval", "logs", "convert.yaml", "convert_report.json", "report.md",
           "report.json")
STAGES = ("record", "convert", "train", "evaluate")


class StageFailed(RuntimeError):
    def __init__(self, stage: str, message: str, log: Path | str):
        super().__init__(f"stage {stage!r} failed: {message}\nlog: {log}")
        self.stage, self.log = stage, str(log)


def merge(base: dict, update: dict) -> dict:
    """Nested dict merge (``update`` wins)."""
    merged = dict(base)
    for key, value in update.items():
        merged[key] = merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def load_settings(config_path: Path | str | None, quick: bool, overrides: dict) -> dict:
    """config/demo.yaml (or ``config_path``), its ``quick`` section with ``quick``, then overrides."""
    path = Path(config_path) if config_path else ros_config_file("demo.yaml")
    settings = yaml.safe_load(path.read_text())
    quick_section = settings.pop("quick", {}) or {}
    if quick:
        settings = merge(settings, quick_section)
    settings = merge(settings, overrides)
    settings["config_file"] = str(path)
    get_task(settings["task"])  # ValueError listing the valid tasks
    for key in ("demos", "image_size"):
        if not int(settings[key]) > 0:
            raise ValueError(f"{key}={settings[key]} must be positive ({path})")
    return settings


def prepare_output(out: Path) -> None:
    """Create ``out`` or clear the previous demo run in it; never touch a directory uwm-demo did not make."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise ValueError(f"--out {out} exists and was not created by uwm-demo; choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("created by uwm-demo; re-running uwm-demo here replaces its outputs\n")
    for name in OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class Demo:
    def __init__(self, settings: dict, out: Path, say=print):
        self.settings, self.out, self.say = settings, out, say
        self.logs = out / "logs"
        self.report = {"status": "running", "command": " ".join(["uwm-demo", *sys.argv[1:]]),
                       "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "machine": machine(), "settings": settings, "stages": {}, "artefacts": {}}

    def run(self) -> dict:
        started = time.monotonic()
        try:
            for number, stage in enumerate(STAGES, 1):
                self.say(f"[{number}/{len(STAGES)}] {stage}: {self._describe(stage)}")
                stage_started = time.monotonic()
                result = getattr(self, f"_{stage}")()
                result["seconds"] = round(time.monotonic() - stage_started, 1)
                self.report["stages"][stage] = result
                self.say(f"      {stage} done in {result['seconds']:.0f} s")
            self.report["status"] = "ok"
        except StageFailed as err:
            self.report.update(status="failed", failed_stage=err.stage, error=str(err))
            raise
        except KeyboardInterrupt:
            self.report["status"] = "interrupted"
            raise
        finally:
            self.report["total_seconds"] = round(time.monotonic() - started, 1)
            self._write_report()
        return self.report

    def _describe(self, stage: str) -> str:
        s = self.settings
        return {
            "record": f"{s['demos']} scripted demos of {s['task']} (sim + expert + recorder over ROS 2)",
            "convert": "uwm-bag2dataset",
            "train": f"uwm-train ({s['train']['recipe']}, {s['train']['overrides'].get('model_preset', 'paper')} "
                     f"preset, {s['train']['overrides'].get('num_steps')} steps)",
            "evaluate": f"uwm-eval-sim, {s['evaluate']['episodes']} closed-loop episode(s) of {s['task']}",
        }[stage]

    @staticmethod
    def _stage_error(stage: str, err: Exception, log: Path) -> StageFailed:
        tail = "" if isinstance(err, OrchestrationError) else log_tail(log)  # its message has the tail
        return StageFailed(stage, str(err) + (f"; the log ends with:\n{tail}" if tail else ""), log)

    # ------------------------------------------------------------------ stages
    def _record(self) -> dict:
        s, log_dir = self.settings, self.logs / "record"
        try:
            episodes = record_demos(self.out / "bags", s["task"], int(s["demos"]), int(s["demo_seed"]), log_dir,
                                    image_size=int(s["image_size"]), tail_steps=int(s["tail_steps"]), say=self.say)
        except OrchestrationError as err:
            raise self._stage_error("record", err, log_dir) from None
        bags = [e.bag for e in episodes if e.bag]
        self.report["artefacts"]["bags"] = bags
        successes = sum(e.success for e in episodes)
        if successes == 0:
            raise StageFailed("record", "the scripted expert succeeded in no episode: nothing to train on", log_dir)
        return {"episodes": len(episodes), "successes": successes, "bags": bags, "log": str(log_dir),
                "seeds": [e.seed for e in episodes], "steps": [e.steps for e in episodes],
                "median_steps": statistics.median(e.steps for e in episodes if e.success)}

    def _convert(self) -> dict:
        log = self.logs / "convert.log"
        dataset = self.out / "dataset"
        try:
            reports = convert_bags([self.out / "bags"], dataset, self.out, log)
            ds = open_dataset(dataset)
        except (OrchestrationError, ValueError, OSError) as err:
            raise self._stage_error("convert", err, log) from None
        self.report["artefacts"]["dataset"] = str(dataset)
        converted = [r for r in reports if r["status"] == "converted"]
        return {"dataset": str(dataset), "episodes": ds.num_episodes, "steps": int(sum(ds.episode_lengths)),
                "skipped": len(reports) - len(converted), "cameras": list(ds.cameras), "log": str(log)}

    def _train(self) -> dict:
        s, log = self.settings["train"], self.logs / "train.log"
        overrides = {**s["overrides"], "datasets": [str(self.out / "dataset")], "out_dir": str(self.out),
                     "run_name": "train", "device": "cpu"}
        argv = train_argv(s["recipe"], overrides)
        try:
            run_logged("uwm-train", argv, log, env=exclusive_threads_env(), say=self.say)  # nothing else runs
        except OrchestrationError as err:
            raise self._stage_error("train", err, log) from None
        checkpoint = self.out / "train" / "checkpoint"
        self.report["artefacts"]["checkpoint"] = str(checkpoint)
        images = sorted((self.out / "train" / "images").glob("*.png"))
        if images:
            self.report["artefacts"]["training_predictions_png"] = str(images[-1])
        curve = self.out / "train" / "learning_curve.png"
        if curve.is_file():
            self.report["artefacts"]["learning_curve_png"] = str(curve)
        return {"checkpoint": str(checkpoint), "run_dir": str(self.out / "train"), "steps": overrides["num_steps"],
                "last_progress": _last_progress(log), "log": str(log)}

    def _evaluate(self) -> dict:
        e, log = self.settings["evaluate"], self.logs / "eval.log"
        eval_dir = self.out / "eval"
        argv = eval_argv(self.out / "train" / "checkpoint", self.settings["task"], eval_dir,
                         image_size=self.settings["image_size"], **e)
        try:
            run_logged("uwm-eval-sim", argv, log, say=self.say, heartbeat_s=5.0)
            report = json.loads((eval_dir / "eval.json").read_text())
        except (OrchestrationError, OSError, ValueError) as err:
            raise self._stage_error("evaluate", err, log) from None
        for name, artefact in report["artefacts"].items():
            self.report["artefacts"][name] = artefact["path"]
        self.report["artefacts"]["eval_report"] = str(eval_dir / "eval.json")
        keys = ("episodes", "successes", "success_rate", "wilson_95", "mean_episode_length", "max_steps",
                "inference_latency", "first_seed")
        return {**{k: report[k] for k in keys}, "log": str(log), "node_logs": report["logs"]}

    # ------------------------------------------------------------------ report
    def _write_report(self) -> None:
        self.report["artefacts"]["report_md"] = str(self.out / "report.md")
        self.report["artefacts"]["report_json"] = str(self.out / "report.json")
        text = report_markdown(self.report)
        for name, content in (("report.md", text), ("report.json", json.dumps(self.report, indent=2))):
            replace_file(self.out / name, content)


def override_value(value) -> str:
    """A uwm-train key=value value (OmegaConf dotlist: YAML flow style)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def train_argv(recipe: str, overrides: dict) -> list[str]:
    """``uwm-train --config RECIPE key=value ...``"""
    return [console_script("uwm-train"), "--config", recipe, *(f"{k}={override_value(v)}" for k, v in overrides.items())]


def eval_argv(checkpoint, task: str, out, **options) -> list[str]:
    """``uwm-eval-sim --checkpoint ... --task ... --out ...`` with options such as episodes=3,
    first_seed=1000 (``--first-seed 1000``) and real_time=True (``--real-time``); None and False
    values are left out."""
    argv = [console_script("uwm-eval-sim"), "--checkpoint", str(checkpoint), "--task", task, "--out", str(out)]
    for name, value in options.items():
        flag = f"--{name.replace('_', '-')}"
        if value is True:
            argv.append(flag)
        elif value is not None and value is not False:
            argv += [flag, str(value)]
    return argv


def _last_progress(log: Path) -> dict:
    """The training log's last progress-bar figures: {"loss": ..., "samples_per_s": ...}."""
    line = last_log_line(log)
    return {key: float(value) for key, value in re.findall(r"(loss|samples_per_s)=([0-9.eE+-]+)", line)}


def machine() -> dict:
    import torch  # here, not at the top: OpenMP reads its wait policy when torch loads (cooperative_threads)

    return {"host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "cpu_model": _cpu_model(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def report_markdown(report: dict) -> str:
    stages, artefacts = report["stages"], report["artefacts"]
    lines = ["# uwm-demo report", "", f"`{report['command']}` on {report['machine']['platform']} "
             f"({report['machine']['cpus']} CPUs), {report['started_at']}: **{report['status']}**"
             + (f" (stage {report.get('failed_stage')} failed)" if report["status"] == "failed" else ""), ""]
    if "evaluate" in stages:
        ev = stages["evaluate"]
        lat = ev["inference_latency"]
        lines += [f"**Success: {ev['successes']}/{ev['episodes']} = {ev['success_rate']:.0%}** "
                  f"(95% Wilson interval {ev['wilson_95'][0]:.0%}..{ev['wilson_95'][1]:.0%}), mean episode length "
                  f"{ev['mean_episode_length']} steps (limit {ev['max_steps']}); inference latency "
                  f"{lat['wall_clock_in_process']['median_s']} s wall clock per action chunk (the policy node "
                  f"measured p50 {lat['p50_s']} s of {lat['node_clock']} time)", ""]
    lines += ["| stage | seconds | result | log |", "|---|---|---|---|"]
    for stage in STAGES:
        if stage not in stages:
            continue
        r = stages[stage]
        result = {
            "record": lambda: f"{r['successes']}/{r['episodes']} expert demos succeeded (median {r['median_steps']:g} "
                              f"steps)",
            "convert": lambda: f"{r['episodes']} episodes, {r['steps']} steps ({r['skipped']} skipped)",
            "train": lambda: f"{r['steps']} steps, final loss {r['last_progress'].get('loss', 'n/a')} "
                             f"({r['last_progress'].get('samples_per_s', 'n/a')} samples/s)",
            "evaluate": lambda: f"{r['successes']}/{r['episodes']} successes",
        }[stage]()
        lines.append(f"| {stage} | {r['seconds']:.0f} | {result} | `{r['log']}` |")
    lines += [f"| total | {report.get('total_seconds', 0):.0f} | | |", "", "Artefacts:", ""]
    for name, value in artefacts.items():
        if name == "bags":
            lines.append(f"- bags ({len(value)}): `{Path(value[0]).parent if value else ''}` "
                         f"({', '.join(Path(b).name for b in value[:3])}{', ...' if len(value) > 3 else ''})")
        else:
            lines.append(f"- {name}: `{value}`")
    if report.get("error"):
        lines += ["", "Error:", "", "```", report["error"], "```"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="uwm-demo", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--quick", action="store_true", help="the tiny version (test suite): a few demos, a few "
                        "training steps, one short evaluation episode")
    parser.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    parser.add_argument("--config", help="demo settings (default: config/demo.yaml)")
    parser.add_argument("--task", help="sim task (lift, stack)")
    parser.add_argument("--demos", type=int, help="scripted demonstrations to record")
    parser.add_argument("--train-steps", type=int, help="training steps")
    parser.add_argument("--eval-episodes", type=int, help="closed-loop evaluation episodes")
    parser.add_argument("--ros-domain-id", type=int, help="ROS domain of the demo's nodes (default: "
                        "$ROS_DOMAIN_ID, else a random one; discovery stays on this machine)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("task", args.task), ("demos", args.demos)) if v is not None}
    if args.train_steps is not None:
        overrides["train"] = {"overrides": {"num_steps": args.train_steps}}
    if args.eval_episodes is not None:
        overrides["evaluate"] = {"episodes": args.eval_episodes}
    out = Path(args.out)
    try:
        settings = load_settings(args.config, args.quick, overrides)
        check_rendering()  # RenderingUnavailable names the package to install
        prepare_output(out)
        domain = isolate_ros_graph(args.ros_domain_id)
        cooperative_threads()
    except (ValueError, OSError, RenderingUnavailable) as err:
        print(f"uwm-demo: error: {err}", file=sys.stderr)
        return 2
    print(f"uwm-demo{' --quick' if args.quick else ''}: outputs in {out.resolve()} (ROS domain {domain}, "
          f"this machine only)", flush=True)
    demo = Demo(settings, out, say=lambda text: print(text, flush=True))
    try:
        report = demo.run()
    except StageFailed as err:
        print(f"uwm-demo: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("uwm-demo: interrupted", file=sys.stderr)
        return 130
    print()
    print(report_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
