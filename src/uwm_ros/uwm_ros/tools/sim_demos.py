"""Scripted demonstrations in the simulated Franka, recorded by the real recorder, converted by
the real converter: the data stages of uwm-demo and bench/uwm_vs_dp.py.

``record_demos`` starts three processes, as a user would for teleoperated demonstrations:

    uwm-sim-node    the simulated Franka, fast (simulated time on /clock, lockstep with its commander)
    uwm-sim-expert  the scripted expert, commanding through the robot interface (uwm_ros.robot)
    uwm-recorder    one rosbag2 (MCAP) per episode, its delta topic the expert's ~/delta_ee

and for every episode sets the sim's ``seed``, calls ``/uwm_sim/reset``, then ``/recorder/start``,
waits for ``~/task_success`` (plus a few steps holding the result) or the task's step limit, and
calls ``/recorder/stop`` with the outcome. The expert acts on every frame set, so the first step
or two of an episode may pass before the recorder's start takes effect (the bag then starts a
step in); the previous episode never leaks into a bag.

``convert_bags`` runs ``uwm-bag2dataset`` (failed episodes are skipped by it) with frames kept at
the sim's rendering size.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from uwm_ros.sim.ros_interface import EPISODE_QOS, SIM_NODE_NAME, parse_episode
from uwm_ros.sim.tasks import get_task
from uwm_ros.tools.processes import (OrchestrationError, ProcessGroup, console_script, read_node_params, ros_args,
                                     ros_config_file, run_logged)
from uwm_ros.tools.ros_client import RosClient

RECORDER_NODE = "/recorder"
EXPERT_DELTA_TOPIC = "/sim_expert/delta_ee"
STARTUP_TIMEOUT_S = 180.0  # imports, MuJoCo model compilation and DDS discovery on a busy 2-core machine
WALL_S_PER_STEP = 1.5  # generous: a lockstep step waits at most 0.5 s for its commander


@dataclass
class RecordedEpisode:
    seed: int
    success: bool
    steps: int  # simulated steps until success (or the limit)
    bag: str | None  # the episode's bag directory


def episode_watcher(ros: RosClient):
    """Subscribe to the sim's ~/episode status; returns a function giving the latest status."""
    latest = {}

    def on_status(msg):
        latest["status"] = parse_episode(msg)

    ros.node.create_subscription(String, f"/{SIM_NODE_NAME}/episode", on_status, EPISODE_QOS)
    return lambda: latest.get("status")


def reset_sim(ros: RosClient, seed: int) -> int:
    """Start a new sim episode with ``seed``; its episode number."""
    ros.set_parameters(f"/{SIM_NODE_NAME}", seed=seed)
    response = ros.call(Trigger, f"/{SIM_NODE_NAME}/reset")
    if not response.success:
        raise OrchestrationError(f"/{SIM_NODE_NAME}/reset failed: {response.message}")
    return int(response.message.split()[-1])  # "task lift seed 3 episode 4"


def sim_node_argv(sim_params: dict, task: str, image_size: int | None) -> list[str]:
    """uwm-sim-node on config/sim.yaml, fast (simulated time), for ``task``."""
    overrides = {"task": task, "real_time": False, **sim_params}
    if image_size is not None:
        overrides.update(image_width=image_size, image_height=image_size)
    return [console_script("uwm-sim-node"), *ros_args([ros_config_file("sim.yaml")], overrides)]


def record_demos(bags_dir: Path | str, task: str, episodes: int, first_seed: int, log_dir: Path | str,
                 image_size: int | None = None, tail_steps: int = 3, say=print) -> list[RecordedEpisode]:
    """Record ``episodes`` scripted demonstrations of ``task`` (seeds first_seed, first_seed + 1, ...)
    into ``bags_dir``, one bag per episode; failed episodes are kept, marked failure."""
    spec = get_task(task)
    bags_dir, log_dir = Path(bags_dir), Path(log_dir)
    bags_dir.mkdir(parents=True, exist_ok=True)
    sim = read_node_params(ros_config_file("sim.yaml"))
    recorder_params = {
        "output_dir": str(bags_dir.resolve()), "task": spec.instruction, "use_sim_time": True,
        "camera_names": sim["cameras"], "camera_topics": sim["camera_topics"], "pose_topic": sim["ee_pose_topic"],
        "delta_topic": EXPERT_DELTA_TOPIC, "target_topic": sim["target_pose_topic"],
        "gripper_topic": sim["gripper_topic"], "status_period_s": 5.0}
    results: list[RecordedEpisode] = []
    with ProcessGroup(log_dir) as processes:
        processes.start("uwm-sim-node", sim_node_argv({"seed": first_seed}, task, image_size), f"sim_{task}.log")
        processes.start("uwm-sim-expert", [console_script("uwm-sim-expert"), *ros_args(
            [ros_config_file("sim.yaml")], {"use_sim_time": True})], f"expert_{task}.log")
        processes.start("uwm-recorder", [console_script("uwm-recorder"), *ros_args(
            [ros_config_file("recorder.yaml")], recorder_params)], f"recorder_{task}.log")
        with RosClient("uwm_demo_recording", watch=processes) as ros:
            status = episode_watcher(ros)
            ros.wait_for(status, STARTUP_TIMEOUT_S, "the first episode of the sim (/uwm_sim/episode)")
            ros.wait_for(lambda: ros.node.count_publishers(EXPERT_DELTA_TOPIC) > 0, STARTUP_TIMEOUT_S,
                         f"the scripted expert ({EXPERT_DELTA_TOPIC})")
            for index in range(episodes):
                seed = first_seed + index
                episode = reset_sim(ros, seed)
                before = set(bags_dir.iterdir())
                # the recorder refuses to start until it has found a publisher on every topic
                started = ros.wait_for(lambda: _start_recorder(ros, Trigger), STARTUP_TIMEOUT_S,
                                       "the recorder to start (it waits for every recorded topic)")
                if started is not True:
                    raise OrchestrationError(f"{RECORDER_NODE}/start: {started}")
                limit = spec.max_steps
                final = ros.wait_for(lambda: _episode_done(status(), episode, limit), limit * WALL_S_PER_STEP + 60,
                                     f"episode {episode} (seed {seed}) of the scripted expert")
                success, steps = final["success"], final["step"]
                if success:  # a few more steps holding the result
                    ros.wait_for(lambda: status()["episode"] != episode or status()["step"] >= steps + tail_steps,
                                 tail_steps * WALL_S_PER_STEP + 30, "the steps after success")
                response = ros.call(SetBool, f"{RECORDER_NODE}/stop", SetBool.Request(data=success))
                if not response.success:
                    raise OrchestrationError(f"{RECORDER_NODE}/stop: {response.message}")
                new = sorted(p for p in set(bags_dir.iterdir()) - before if p.is_dir())
                results.append(RecordedEpisode(seed, success, steps, str(new[-1]) if new else None))
                say(f"  {task} episode {index + 1}/{episodes} (seed {seed}): "
                    f"{'success' if success else 'FAILED'} after {steps} steps")
    return results


def _start_recorder(ros: RosClient, trigger_type):
    response = ros.call(trigger_type, f"{RECORDER_NODE}/start")
    if response.success:
        return True
    time.sleep(0.2)  # topics still being discovered
    return False if "no publisher yet" in response.message else response.message


def _episode_done(status: dict | None, episode: int, limit: int) -> dict | None:
    if status is None or status["episode"] != episode:
        return None
    return status if status["success"] or status["step"] >= limit else None


def write_convert_config(path: Path | str, image_size=None) -> Path:
    """config/convert.yaml with the frames kept at ``image_size`` ([h, w]; None: as rendered) and the
    expert's delta topic (bags from uwm-recorder name their own topics anyway)."""
    config = yaml.safe_load(ros_config_file("convert.yaml").read_text())
    config.update(image_size=image_size, delta_topic=EXPERT_DELTA_TOPIC)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def convert_bags(bags, dataset: Path | str, work_dir: Path | str, log_path: Path | str,
                 include_failed: bool = False) -> list[dict]:
    """``uwm-bag2dataset BAGS --out DATASET`` (frames at rendering size); its per-bag reports."""
    work_dir = Path(work_dir)
    config = write_convert_config(work_dir / "convert.yaml")
    report = work_dir / "convert_report.json"
    argv = [console_script("uwm-bag2dataset"), *map(str, bags), "--out", str(dataset), "--config", str(config),
            "--json-report", str(report)] + (["--include-failed"] if include_failed else [])
    run_logged("uwm-bag2dataset", argv, log_path)
    return json.loads(report.read_text())


def summary(episodes: list[RecordedEpisode]) -> dict:
    return {"episodes": len(episodes), "successes": sum(e.success for e in episodes),
            "bags": [asdict(e) for e in episodes]}
