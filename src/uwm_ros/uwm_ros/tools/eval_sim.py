"""uwm-eval-sim: closed-loop evaluation of a checkpoint in the simulated Franka, over ROS 2.

    uwm-eval-sim --checkpoint runs/demo/train/checkpoint --task lift --episodes 20
    uwm-eval-sim --checkpoint ... --task stack --episodes 50 --first-seed 5000 --out runs/eval_stack

The real nodes run as separate processes talking over DDS (confined to this machine, in a ROS
domain of their own): ``uwm-sim-node`` (config/sim.yaml) and ``uwm-policy-node`` (config/policy.yaml
with the sim's robot interface from config/sim.yaml, as ``policy.launch.py use_sim:=true`` does).
For every episode this process sets the sim's seed and calls ``/uwm_sim/reset``, waits until the
policy can observe ``obs_horizon`` frame sets of the new episode, activates ``/uwm_policy``, and
deactivates it at ``~/task_success`` or after the step limit.

By default the sim runs fast, on simulated time and in lockstep with the policy (``real_time``
false): results do not depend on how busy the CPU is. ``--real-time`` paces the sim by the wall
clock instead, as on the robot, where a slow inference costs robot time.

Written to ``--out``: ``eval.json`` (the report), ``rollouts.mp4`` (the first ``--video-episodes``
rollouts, all cameras side by side), ``predicted_frames.png`` (for a rollout: the current frames,
the frames actually observed after the next action chunk, and the world model's forward-dynamics
prediction of them from the actions actually executed) and ``logs/`` (one log per node).

Reported: success rate with its 95% Wilson interval, mean episode length (steps until success,
or the limit), and inference latency as the policy node measures it (``~/status``: on the node's
clock, which is simulated time in the default fast mode) plus the model's wall-clock latency
measured in this process after the rollouts.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# torch and diffusers load here, before check_rendering: loaded after an OSMesa context they segfault
from uwm_core import WorldModel
from uwm_core.checkpoint import CheckpointError, read_checkpoint_config
from uwm_core.durable import replace_file
from uwm_core.spatial import ACTION_DIM
from uwm_ros.sim.metrics import wilson_interval
from uwm_ros.sim.rendering import RenderingUnavailable, check_rendering
from uwm_ros.sim.tasks import TASKS, get_task
from uwm_ros.tools.processes import (OrchestrationError, ProcessGroup, console_script, cooperative_threads,
                                     isolate_ros_graph, read_node_params, ros_args, ros_config_file)
from uwm_ros.tools.rollout_media import predicted_frames_strip, write_video
from uwm_ros.tools.rollout_recorder import RolloutRecorder
from uwm_ros.tools.ros_client import RosClient
from uwm_ros.tools.sim_demos import reset_sim

POLICY_NODE = "/uwm_policy"
CONFIGURE_TIMEOUT_S = 600.0  # load + warm-up of a large checkpoint on a CPU
WALL_S_PER_STEP = 1.5  # generous: a lockstep step waits at most 0.5 s for the policy
LATENCY_CALLS = 5


class EvalInputError(ValueError):
    """A task, checkpoint or option the evaluation cannot run with; the message lists valid choices."""


@dataclass
class EvalSettings:
    checkpoint: str
    task: str = "lift"
    episodes: int = 10
    first_seed: int = 1000  # demos recorded by uwm-demo use seeds from 0: evaluate on others
    max_steps: int | None = None  # None: the task's limit
    out_dir: str = "runs/eval"
    video_episodes: int = 2
    image_size: int | None = None  # rendered camera size; None: config/sim.yaml's
    device: str = "cpu"
    precision: str = "auto"  # inference arithmetic of the policy: auto, fp32, bf16, fp16 (CUDA)
    real_time: bool = False
    policy_seed: int = 0  # chunk n of the policy is sampled with policy_seed + n
    torch_threads: int = 0


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    steps: int  # until success, or the steps run when the limit or a fault ended it
    fault: str | None = None
    inference: dict = field(default_factory=dict)  # the policy's ~/status at the end of the episode


# ---------------------------------------------------------------------- input checks
def sim_cameras(sim_params: dict) -> dict[str, tuple[str, str]]:
    """camera name -> (scene camera rendered, image topic) of a sim parameter set."""
    return {name: (source, topic) for name, source, topic in
            zip(sim_params["cameras"], sim_params["camera_sources"], sim_params["camera_topics"])}


def check_inputs(settings: EvalSettings, sim_params: dict):
    """The checkpoint's ModelConfig; EvalInputError (listing the valid choices) for a task the sim
    does not know, a checkpoint whose cameras the sim does not render or bad numbers."""
    if settings.task not in TASKS:
        raise EvalInputError(f"--task {settings.task!r}: the sim does not know this task; valid tasks: "
                             f"{', '.join(TASKS)}")
    for name in ("episodes", "video_episodes", "max_steps", "image_size"):
        value = getattr(settings, name)
        if value is not None and (value < 0 or (value == 0 and name != "video_episodes")):
            raise EvalInputError(f"--{name.replace('_', '-')} {value}: must be a positive number")
    try:
        model_cfg, _ = read_checkpoint_config(settings.checkpoint)
    except CheckpointError as err:
        raise EvalInputError(f"--checkpoint: {err}") from None
    available = sim_cameras(sim_params)
    unknown = [c for c in model_cfg.cameras if c not in available]
    if unknown:
        raise EvalInputError(
            f"--checkpoint {settings.checkpoint} was trained with cameras {list(model_cfg.cameras)}, but the sim "
            f"renders no camera {unknown}; valid cameras: {', '.join(available)} (config/sim.yaml: cameras; "
            "train on a dataset recorded with these camera names)")
    if model_cfg.action_dim != ACTION_DIM:
        raise EvalInputError(f"--checkpoint {settings.checkpoint} has action_dim {model_cfg.action_dim}; the sim "
                             f"is commanded with {ACTION_DIM}-D actions [dx, dy, dz, rx, ry, rz, gripper]")
    return model_cfg


# ---------------------------------------------------------------------- the evaluation
def wall_clock_latency(wm, record: dict, calls: int = LATENCY_CALLS) -> dict:
    """predict_actions wall time in this process (median and max of ``calls``), on recorded frames."""
    sets = list(record["frames"].values())
    if len(sets) >= wm.obs_horizon:
        images = {c: np.stack([s[c] for s in sets[:wm.obs_horizon]]) for c in wm.cameras}
    else:
        size = wm.image_size
        images = {c: np.full((wm.obs_horizon, size, size, 3), 127, np.uint8) for c in wm.cameras}
    state = np.zeros((wm.obs_horizon, wm.state_dim)) if wm.state_dim else None  # the time does not depend on it
    times = []
    for i in range(calls + 1):  # the first call warms up
        started = time.perf_counter()
        wm.predict_actions(images, seed=i, state=state)
        times.append(time.perf_counter() - started)
    return {"median_s": round(float(np.median(times[1:])), 4), "max_s": round(float(np.max(times[1:])), 4),
            "calls": calls}


def evaluate(settings: EvalSettings, model_cfg, say=print) -> dict:
    """Run the closed-loop evaluation of a checkpoint (``model_cfg``: its config, from check_inputs);
    returns the report (also written to <out_dir>/eval.json)."""
    sim_params_file = ros_config_file("sim.yaml")
    sim_params = read_node_params(sim_params_file)
    spec = get_task(settings.task)
    max_steps = settings.max_steps or spec.max_steps
    out_dir = Path(settings.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = out_dir / "logs"
    cameras = sim_cameras(sim_params)
    used = {c: cameras[c] for c in model_cfg.cameras}
    camera_topics = {c: topic for c, (_, topic) in used.items()}
    sim_overrides = {"task": settings.task, "real_time": settings.real_time, "seed": settings.first_seed,
                     "cameras": list(used), "camera_sources": [s for s, _ in used.values()],
                     "camera_topics": list(camera_topics.values())}
    if settings.image_size:
        sim_overrides.update(image_width=settings.image_size, image_height=settings.image_size)
    policy_overrides = {"checkpoint": str(Path(settings.checkpoint).resolve()), "device": settings.device,
                        "precision": settings.precision, "use_sim_time": not settings.real_time,
                        "seed": settings.policy_seed,
                        "camera_topics": list(camera_topics.values()), "torch_threads": settings.torch_threads,
                        "status_period_s": 0.5, "autostart": False}
    started = time.monotonic()
    results: list[EpisodeResult] = []
    records: list[dict] = []
    timings = {}
    with ProcessGroup(log_dir) as processes:
        processes.start("uwm-sim-node", [console_script("uwm-sim-node"),
                                         *ros_args([sim_params_file], sim_overrides)], "sim.log")
        # the policy on the sim's robot interface, as policy.launch.py use_sim:=true sets it up
        processes.start("uwm-policy-node", [console_script("uwm-policy-node"), *ros_args(
            [ros_config_file("policy.yaml"), sim_params_file], policy_overrides)], "policy.log")
        with RosClient("uwm_eval_sim", watch=processes) as ros:
            recorder = RolloutRecorder(ros, POLICY_NODE, camera_topics, sim_params["gripper_topic"],
                                       sim_params["ee_pose_topic"], round(1e9 / sim_params["control_rate_hz"]))
            policy = ros.lifecycle(POLICY_NODE)
            say(f"configuring {POLICY_NODE} with {settings.checkpoint} (loads the model, one warm-up inference)")
            ros.wait_for(lambda: recorder.latest()[0], CONFIGURE_TIMEOUT_S, "the sim's first episode (/uwm_sim/episode)")
            if not policy.change("configure", CONFIGURE_TIMEOUT_S):
                raise OrchestrationError(f"{POLICY_NODE} failed to configure; see {log_dir / 'policy.log'}")
            timings["startup_s"] = round(time.monotonic() - started, 1)
            for index in range(settings.episodes):
                seed = settings.first_seed + index
                recorder.begin(keep_frames=index < max(settings.video_episodes, 1))
                episode = reset_sim(ros, seed)
                # activate once the policy can observe obs_horizon frame sets of this episode only
                ros.wait_for(lambda: _status_of(recorder, episode, model_cfg.obs_horizon - 1), 60.0,
                             f"episode {episode} of the sim to start")
                if not policy.change("activate"):
                    raise OrchestrationError(f"{POLICY_NODE} failed to activate; see {log_dir / 'policy.log'}")
                final = ros.wait_for(lambda: _episode_over(recorder, episode, max_steps),
                                     max_steps * WALL_S_PER_STEP + 120, f"episode {episode} (seed {seed}) to end")
                state = policy.state()
                if state == "active":
                    policy.change("deactivate")
                status, policy_status = recorder.latest()
                fault = final.get("fault") or (None if state == "active" else f"policy left the active state ({state})")
                if state == "unconfigured" and not policy.change("configure", CONFIGURE_TIMEOUT_S):
                    raise OrchestrationError(f"{POLICY_NODE} failed to configure again after a fault; see "
                                             f"{log_dir / 'policy.log'}")
                result = EpisodeResult(seed, bool(final.get("success")), int(final.get("step", 0)), fault,
                                       _inference_summary(policy_status))
                results.append(result)
                records.append(recorder.end(episode))
                successes = sum(r.success for r in results)
                say(f"  episode {index + 1}/{settings.episodes} (seed {seed}): "
                    f"{'success' if result.success else 'failure'} after {result.steps} steps"
                    f"{f' ({fault})' if fault else ''} | {successes}/{len(results)} successes")
    timings["rollouts_s"] = round(time.monotonic() - started - timings.get("startup_s", 0.0), 1)
    return _finish(settings, model_cfg, results, records, timings, out_dir, log_dir, max_steps, say)


def _status_of(recorder: RolloutRecorder, episode: int, min_step: int):
    status, _ = recorder.latest()
    return status if status is not None and status["episode"] == episode and status["step"] >= min_step else None


def _episode_over(recorder: RolloutRecorder, episode: int, max_steps: int):
    status, policy_status = recorder.latest()
    if status is not None and status["episode"] == episode:
        if status["success"] and status["step"] <= max_steps:
            return status
        if status["step"] >= max_steps:
            # The limit ends the episode; in fast mode the sim may be a step further by the time we look.
            return {**status, "success": False, "step": max_steps}
    if policy_status is not None and policy_status.get("fault"):
        return {"success": False, "step": status["step"] if status else 0,
                "fault": f"policy fault: {policy_status['fault']}"}
    return None


def _inference_summary(policy_status: dict | None) -> dict:
    keys = ("inference_latency_p50_s", "inference_latency_p99_s", "inferences", "chunks_used", "actions_executed",
            "actions_skipped", "tick_period_p50_s")
    return {k: policy_status.get(k) for k in keys} if policy_status else {}


def _finish(settings, model_cfg, results, records, timings, out_dir: Path, log_dir: Path, max_steps, say) -> dict:
    successes = sum(r.success for r in results)
    low, high = wilson_interval(successes, len(results))
    started = time.monotonic()
    wm = WorldModel.from_checkpoint(settings.checkpoint, device=settings.device, precision=settings.precision)
    artefacts = {}
    video_records = [(r, rec) for r, rec in zip(results, records) if rec["frames"]][:settings.video_episodes]
    if video_records:
        path = out_dir / "rollouts.mp4"
        frames = write_video(path, [(f"{settings.task} seed {r.seed}: {'success' if r.success else 'failure'}",
                                     list(rec["frames"].values())) for r, rec in video_records],
                             list(model_cfg.cameras), fps=10.0)
        artefacts["video"] = {"path": str(path), "frames": frames, "episodes": [r.seed for r, _ in video_records]}
    strip = predicted_frames_strip(wm, records[0], out_dir / "predicted_frames.png") if records else None
    if strip is not None:
        artefacts["predicted_frames_png"] = strip
    latency_wall = wall_clock_latency(wm, records[0] if records else {"frames": {}})
    timings["artefacts_s"] = round(time.monotonic() - started, 1)
    last = next((r.inference for r in reversed(results) if r.inference), {})
    report = {
        "task": settings.task,
        "checkpoint": str(settings.checkpoint),
        "variant": model_cfg.variant,
        "episodes": len(results),
        "successes": successes,
        "success_rate": successes / len(results) if results else 0.0,
        "wilson_95": [round(low, 4), round(high, 4)],
        "mean_episode_length": round(float(np.mean([r.steps for r in results])), 2) if results else None,
        "max_steps": max_steps,
        "first_seed": settings.first_seed,
        "real_time": settings.real_time,
        "inference_latency": {
            "node_clock": "wall" if settings.real_time else "simulated",
            "p50_s": last.get("inference_latency_p50_s"), "p99_s": last.get("inference_latency_p99_s"),
            "wall_clock_in_process": latency_wall},
        "episode_results": [asdict(r) for r in results],
        "artefacts": artefacts,
        "logs": str(log_dir),
        "timings": timings,
    }
    replace_file(out_dir / "eval.json", json.dumps(report, indent=2))
    say(summary_text(report))
    return report


def summary_text(report: dict) -> str:
    latency = report["inference_latency"]
    lines = [
        f"{report['task']}: success {report['successes']}/{report['episodes']} = {report['success_rate']:.1%} "
        f"(95% Wilson interval {report['wilson_95'][0]:.1%}..{report['wilson_95'][1]:.1%}), mean episode length "
        f"{report['mean_episode_length']} steps (limit {report['max_steps']})",
        f"inference latency: {_seconds(latency['wall_clock_in_process']['median_s'])} wall clock per action chunk "
        f"(median of {latency['wall_clock_in_process']['calls']} in this process); the policy node measured p50 "
        f"{_seconds(latency['p50_s'])}, p99 {_seconds(latency['p99_s'])} of {latency['node_clock']} time "
        f"(~/status{'' if latency['node_clock'] == 'wall' else '; the fast sim waits for the policy'})",
    ]
    for name, artefact in report["artefacts"].items():
        lines.append(f"{name}: {artefact['path']}")
    return "\n".join(lines)


def _seconds(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f} s"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="uwm-eval-sim", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory written by uwm-train")
    parser.add_argument("--task", default="lift", help=f"sim task: {', '.join(TASKS)} (default lift)")
    parser.add_argument("--episodes", type=int, default=10, help="number of rollouts (default 10)")
    parser.add_argument("--first-seed", type=int, default=1000, help="seed of the first rollout; then +1 each "
                        "(default 1000, away from the demos' seeds)")
    parser.add_argument("--max-steps", type=int, help="step limit per rollout (default: the task's)")
    parser.add_argument("--out", default="runs/eval", help="output directory (default runs/eval)")
    parser.add_argument("--video-episodes", type=int, default=2, help="rollouts saved in rollouts.mp4 (default 2)")
    parser.add_argument("--image-size", type=int, help="rendered camera size in pixels (default: config/sim.yaml)")
    parser.add_argument("--device", default="cpu", help="policy device: cpu, cuda, auto (default cpu)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="inference arithmetic (default auto: bf16 where the CPU or GPU computes it natively)")
    parser.add_argument("--real-time", action="store_true", help="pace the sim by the wall clock (default: fast, "
                        "simulated time, lockstep with the policy)")
    parser.add_argument("--policy-seed", type=int, default=0, help="action sampling seed of the policy node")
    parser.add_argument("--torch-threads", type=int, default=0, help="CPU threads of the policy (0: torch's default)")
    parser.add_argument("--ros-domain-id", type=int, help="ROS domain of the nodes (default: $ROS_DOMAIN_ID, else "
                        "a random one; discovery stays on this machine)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON at the end")
    args = parser.parse_args(argv)
    settings = EvalSettings(checkpoint=args.checkpoint, task=args.task, episodes=args.episodes,
                            first_seed=args.first_seed, max_steps=args.max_steps, out_dir=args.out,
                            video_episodes=args.video_episodes, image_size=args.image_size, device=args.device,
                            precision=args.precision, real_time=args.real_time, policy_seed=args.policy_seed,
                            torch_threads=args.torch_threads)
    try:
        model_cfg = check_inputs(settings, read_node_params(ros_config_file("sim.yaml")))
        check_rendering()  # RenderingUnavailable names the package to install
        isolate_ros_graph(args.ros_domain_id)
        cooperative_threads()
        report = evaluate(settings, model_cfg)
    except (EvalInputError, ValueError, RenderingUnavailable) as err:
        print(f"uwm-eval-sim: error: {err}", file=sys.stderr)
        return 2
    except OrchestrationError as err:
        print(f"uwm-eval-sim: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("uwm-eval-sim: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
