"""Conversion speed and memory of uwm-bag2dataset on DROID-like bags, for one bag and for many.

Writes EPISODES bags (MCAP, rosbags) of three 640x480 rgb8 cameras at 30 Hz (noise frames: the
worst case for compression) plus a 10 Hz command stream (delta, target, gripper) and a 100 Hz
measured pose, then converts the first bag, and all of them, each in a fresh process, into the
default 240x320 dataset. Prints steps/s, the real-time factor (seconds recorded per second of
conversion, including the dataset's creation and commit) and that process's peak memory: one bag
is written while the next is read, so the peak does not grow with the number of bags.

    .venv/bin/python bench/convert_throughput.py [--seconds 10] [--episodes 10] [--image-size 240 320]
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
    from uwm_teleop.bag2dataset import convert
    from uwm_teleop.conversion_config import ConvertConfig

    cfg = ConvertConfig(image_size=image_size)
    before = peak_rss_mb()
    start = time.perf_counter()
    reports = convert(bags, out, cfg, progress=False)
    results.put({"seconds": time.perf_counter() - start, "steps": sum(r.steps for r in reports),
                 "statuses": sorted(set(r.status for r in reports)), "rss_before_mb": before,
                 "rss_peak_mb": peak_rss_mb()})


def measure(bags: list[Path], out: Path, image_size, seconds_per_bag: float) -> None:
    shutil.rmtree(out, ignore_errors=True)
    context = multiprocessing.get_context("spawn")  # a fresh process: its peak memory is the conversion's
    results = context.Queue()
    process = context.Process(target=convert_in_this_process, args=(bags, out, image_size, results))
    process.start()
    result = results.get()
    process.join()
    shutil.rmtree(out, ignore_errors=True)
    steps, seconds = result["steps"], result["seconds"]
    recorded = seconds_per_bag * len(bags)
    print(f"{len(bags):3d} bag(s), {recorded:g} s recorded: {steps} steps ({', '.join(result['statuses'])}) in "
          f"{seconds:.2f} s = {steps / seconds:.1f} steps/s, {recorded / seconds:.1f}x real time; peak RSS "
          f"{result['rss_peak_mb']:.0f} MB ({result['rss_peak_mb'] - result['rss_before_mb']:.0f} MB over the "
          f"{result['rss_before_mb']:.0f} MB of Python, torch and zarr)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each episode")
    parser.add_argument("--episodes", type=int, default=10, help="bags converted together (the first also alone)")
    parser.add_argument("--image-size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    parser.add_argument("--workdir", help="where to write the bags, kept for the next run (default: a temporary "
                        "directory)")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="uwm-convert-bench-"))
    bags = []
    start = time.perf_counter()
    for i in range(args.episodes):
        bags.append(workdir / f"episode_{i:04d}_{args.seconds:g}s")
        if not bags[-1].exists():
            write_bag(bags[-1], args.seconds, i)
    bag_mb = sum(f.stat().st_size for b in bags for f in b.iterdir()) / 2**20
    print(f"bags: {args.episodes} x {args.seconds:g} s, 3 cameras 640x480 rgb8 @ 30 Hz: {bag_mb:.0f} MB "
          f"(written in {time.perf_counter() - start:.1f} s) in {workdir}")
    for batch in ([bags[0]], bags) if len(bags) > 1 else ([bags[0]],):
        for bag in batch:  # read from the page cache, as the bags just recorded or copied would be
            for f in bag.iterdir():
                with open(f, "rb") as stream:
                    while stream.read(1 << 24):
                        pass
        measure(batch, workdir / "dataset", args.image_size, args.seconds)
    if not args.workdir:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
