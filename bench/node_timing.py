"""Control-loop timing of the uwm_policy node: tick period and chunk latency per model preset.

    .venv/bin/python bench/node_timing.py                       # tiny, 20 s
    .venv/bin/python bench/node_timing.py --presets tiny small paper --seconds 30

For each preset a randomly initialised model (cameras left/right/wrist, 7-D actions) runs in the
real node against synthetic 30 Hz cameras and a measured pose over DDS (loopback), exactly as in
tests/ros. Printed per preset: the period of the node's control ticks that sent a command
(min/p50/p99/max), the period at which the robot received them while moving, chunk latency
(observation -> actions, p50/p99), the replanning lead, how many actions were skipped because
their tick had passed, and the ticks spent holding for a chunk (stalls).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the robot test double
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
import torch  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from uwm_core import WorldModel  # noqa: E402
from uwm_core.config import load_model_config  # noqa: E402
from uwm_core.model import UnifiedWorldModel  # noqa: E402
from uwm_core.processing import ActionNormalizer  # noqa: E402
from uwm_ros.policy.node import PolicyNode  # noqa: E402
from uwm_ros.robot.spinning import spin  # noqa: E402
from doubles.synthetic_robot import SyntheticRobot  # noqa: E402

CAMERAS = ["left", "right", "wrist"]
PRESET_OVERRIDES = {"paper": {"resnet_weights": None, "vae": {"pretrained": None}}}


def build_model(preset: str, device: str, precision: str) -> WorldModel:
    torch.manual_seed(0)
    cfg = load_model_config(preset, {"cameras": CAMERAS, "action_dim": 7, **PRESET_OVERRIDES.get(preset, {})})
    model = UnifiedWorldModel(cfg)
    if model.vae.needs_latent_statistics:
        model.vae.estimate_latent_statistics(torch.rand(4, 3, cfg.image_size, cfg.image_size))
    # millimetre-scale actions: the synthetic pose stays inside the workspace box
    normalizer = ActionNormalizer(np.array([-0.004] * 3 + [-0.02] * 3 + [0.0]),
                                  np.array([0.004] * 3 + [0.02] * 3 + [1.0]))
    return WorldModel(model, normalizer, device, precision)


def percentiles(values) -> str:
    if len(values) == 0:
        return "-"
    v = np.asarray(values) * 1000
    return f"{np.percentile(v, 50):7.1f} {np.percentile(v, 99):7.1f} {v.max():7.1f}"


def run(preset: str, seconds: float, device: str, precision: str, rate_hz: float, threads: int, execute_steps: int,
        index: int) -> dict:
    started = time.monotonic()
    wm = build_model(preset, device, precision)
    ns = f"/bench{index}"
    topics = {c: f"{ns}/cam/{c}/image_raw" for c in CAMERAS}
    params = {"checkpoint": f"in-memory {preset}", "device": device, "precision": precision,
              "camera_topics": list(topics.values()),
              "ee_pose_topic": f"{ns}/pose", "target_pose_topic": f"{ns}/target", "gripper_topic": f"{ns}/gripper",
              "control_rate_hz": rate_hz, "torch_threads": threads, "execute_steps": execute_steps, "seed": 0}
    node = PolicyNode(load_world_model=lambda path, dev, precision, compile: wm, namespace=ns,
                      parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    spinner = threading.Thread(target=spin, args=(executor,), daemon=True)
    spinner.start()
    robot = SyntheticRobot(ns, topics, f"{ns}/pose", f"{ns}/target", f"{ns}/gripper",
                           commander=f"{ns}/uwm_policy", image_shape=(240, 320))
    robot.follow_target = True  # an ideal controller: the measured pose tracks the target
    try:
        assert robot.change_state("configure", timeout_s=900), f"{preset}: configure failed"
        assert robot.change_state("activate")
        activated = time.monotonic()
        time.sleep(seconds)
        status = node.status()
        ticks_run = round((time.monotonic() - activated) * rate_hz)  # the node keeps only its last ticks' times
        ticks = np.diff(np.asarray(node._control.tick_times))
        latencies = list(node._control.latencies)
        robot.change_state("deactivate")
        moving = [at for at, m in robot.snapshot("deltas")
                  if at > activated and any((m.twist.linear.x, m.twist.linear.y, m.twist.linear.z))]
        commands = np.diff(moving)
        robot.change_state("shutdown", timeout_s=900)  # waits for a running inference
    finally:
        robot.close()
        executor.shutdown()
        spinner.join(5.0)  # no callback of the node still running when it is destroyed
        node.destroy_node()
    return {"preset": preset, "ticks": ticks, "commands": commands[commands < 2.5 / rate_hz],
            "latencies": latencies, "status": status, "stalls": ticks_run - status["actions_executed"],
            "wall_s": time.monotonic() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny"], help="model presets (tiny, small, paper)")
    parser.add_argument("--seconds", type=float, default=20.0, help="active control time per preset")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", help="inference precision: auto (the node's default), fp32, "
                        "bf16, fp16")
    parser.add_argument("--rate", type=float, default=10.0, help="control_rate_hz")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--execute-steps", type=int, default=0, help="actions executed per chunk (0: the preset's)")
    args = parser.parse_args()
    rclpy.init()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__}, device {args.device}, precision {args.precision}, control {args.rate:g} Hz, "
          f"{args.seconds:g} s per preset")
    results = []
    try:
        for i, preset in enumerate(args.presets):
            print(f"[{preset}] running ...", flush=True)
            results.append(run(preset, args.seconds, args.device, args.precision, args.rate, args.threads,
                               args.execute_steps, i))
    finally:
        rclpy.shutdown()
    print()
    print(f"{'preset':8} {'tick period ms (sent)':>31} {'command arrival ms':>23} {'chunk latency ms':>23} "
          f"{'lead':>4} {'chunks':>6} {'executed':>8} {'skipped':>7} {'stalls':>6} {'bunched':>7}")
    print(f"{'':8} {'min     p50     p99     max':>31} {'p50     p99     max':>23} {'p50     p99     max':>23}")
    for r in results:
        s = r["status"]
        shortest = f"{1e3 * min(r['ticks']):7.1f} " if len(r["ticks"]) else "    n/a "
        print(f"{r['preset']:8} {shortest + percentiles(r['ticks']):>31} {percentiles(r['commands']):>23} "
              f"{percentiles(r['latencies']):>23} {s['lead_ticks']:>4} {s['chunks_used']:>6} "
              f"{s['actions_executed']:>8} {s['actions_skipped']:>7} {r['stalls']:>6} {s['ticks_bunched']:>7}")
    print("\nlead 0 = synchronous (inference slower than the execution window: hold, then execute from action 0);"
          "\nstalls = ticks that held while waiting for a chunk (including the first one);"
          "\nbunched = ticks that sent nothing because the tick before them ran late: the node never sends two"
          " commands\n  less than half a period apart (min tick period); their arrival at the in-process robot can"
          " still bunch\n  when inference starves its executor.")


if __name__ == "__main__":
    main()
