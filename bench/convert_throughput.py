"""Conversion throughput and memory of uwm-bag2dataset on DROID-like bags.

Writes EPISODES bags (MCAP, rosbags) of three 640x480 rgb8 cameras at 30 Hz plus a 10 Hz
command stream (delta, target, gripper) and a 100 Hz measured pose, then converts them in a
fresh process and prints steps/s, MB/s of bag read, and that process's peak memory next to the
size of one episode's frames: conversion holds one episode at a time, so the peak does not grow
with the number of episodes.

    .venv/bin/python bench/convert_throughput.py [--seconds 10] [--episodes 2] [--image-size 240 320]
"""
from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "teleop"))
from bagfactory import BagBuilder  # noqa: E402

CAMERAS = {"left": "/cameras/left/image_raw", "right": "/cameras/right/image_raw",
           "wrist": "/cameras/wrist/image_raw"}
MS = 1_000_000


def write_bag(path: Path, seconds: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    bag = BagBuilder(path, custom={"uwm.task": "bench", "uwm.outcome": "success", "uwm.episode_id": f"bench-{seed}"})
    t0 = 1_700_000_000 * 10**9
    for i in range(int(seconds * 30)):
        for k, topic in enumerate(CAMERAS.values()):
            bag.image(topic, t0 + i * 33_333_333 + k * MS, np.roll(base, i + 7 * k, axis=1))
    position, quat = np.array([0.5, 0.0, 0.3]), np.array([0.0, 0.0, 0.0, 1.0])
    for i in range(int(seconds * 100)):
        bag.pose("/franka_robot_state_broadcaster/current_pose", t0 + i * 10 * MS, position, quat)
    for i in range(int(seconds * 10)):
        stamp = t0 + 40 * MS + i * 100 * MS
        bag.twist("/teleop/delta_ee", stamp, rng.normal(0, 0.005, 6))
        bag.pose("/cartesian_impedance_controller/target_pose", stamp, position, quat)
        bag.gripper("/gripper/command", stamp + MS, float(i > seconds * 5))
    bag.close()


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def convert_in_this_process(bags, out, image_size, results) -> None:
    from uwm_teleop.bag2dataset import ConvertConfig, convert

    cfg = ConvertConfig(image_size=image_size)
    before = peak_rss_mb()
    start = time.perf_counter()
    reports = convert(bags, out, cfg, progress=False)
    results.put({"seconds": time.perf_counter() - start, "steps": sum(r.steps for r in reports),
                 "statuses": [r.status for r in reports], "rss_before_mb": before, "rss_peak_mb": peak_rss_mb()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each episode")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--image-size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    parser.add_argument("--workdir", help="where to write the bags (default: a temporary directory)")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="uwm-convert-bench-"))
    bags = []
    start = time.perf_counter()
    for i in range(args.episodes):
        bags.append(workdir / f"episode_{i:04d}")
        if not bags[-1].exists():
            write_bag(bags[-1], args.seconds, i)
    bag_mb = sum(f.stat().st_size for b in bags for f in b.iterdir()) / 2**20
    print(f"bags: {args.episodes} x {args.seconds:g} s, 3 cameras 640x480 rgb8 @ 30 Hz: {bag_mb:.0f} MB "
          f"(written in {time.perf_counter() - start:.1f} s) in {workdir}")

    out = workdir / "dataset"
    shutil.rmtree(out, ignore_errors=True)
    context = multiprocessing.get_context("spawn")  # a fresh process: its peak memory is the conversion's
    results = context.Queue()
    process = context.Process(target=convert_in_this_process, args=(bags, out, args.image_size, results))
    process.start()
    result = results.get()
    process.join()
    steps, seconds = result["steps"], result["seconds"]
    h, w = args.image_size
    episode_frames_mb = steps / args.episodes * len(CAMERAS) * h * w * 3 / 2**20
    print(f"converted {steps} steps ({result['statuses']}) in {seconds:.1f} s: {steps / seconds:.1f} steps/s, "
          f"{bag_mb / seconds:.1f} MB/s of bag")
    print(f"memory: peak RSS {result['rss_peak_mb']:.0f} MB, of which {result['rss_before_mb']:.0f} MB before "
          f"converting (Python, torch, zarr); conversion added {result['rss_peak_mb'] - result['rss_before_mb']:.0f} "
          f"MB; one episode's frames at {h}x{w} are {episode_frames_mb:.0f} MB, all {args.episodes} episodes' "
          f"{episode_frames_mb * args.episodes:.0f} MB, one bag {bag_mb / args.episodes:.0f} MB")
    if not args.workdir:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
