"""Soak test of the policy node with DROID-sized cameras: 3 x 640x480 rgb8 at 30 Hz for minutes.

    .venv/bin/python bench/node_soak.py                      # 5 minutes, the shipped Fast DDS profile
    .venv/bin/python bench/node_soak.py --minutes 1 --no-profile

The node runs as its own process (`uwm-policy-node`, a random tiny checkpoint, 10 Hz control,
autostart); this process plays the robot (SyntheticRobot: cameras, a measured pose that follows
the targets) and checks every target the node sends against the per-step clamps and the
workspace box. Both processes use config/fastdds_large_images.xml (shared memory, 32 MB segments)
unless --no-profile. Prints, per camera, the frames published and the rate the node received;
chunks used, stalled ticks (control ticks that sent no motion), the node's RSS after 1 minute and
at the end, and the clamp/box violations (must be 0).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the robot test double
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
import torch  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from uwm_core.checkpoint import save_checkpoint  # noqa: E402
from uwm_core.config import load_model_config  # noqa: E402
from uwm_core.model import UnifiedWorldModel  # noqa: E402
from uwm_core.processing import ActionNormalizer  # noqa: E402
from uwm_ros.launch_helpers import DDS_PROFILE_VARIABLES, config_path  # noqa: E402
from doubles.synthetic_robot import SyntheticRobot  # noqa: E402

CAMERAS = ["left", "right", "wrist"]
NS = "/soak"
CLAMP_M, CLAMP_RAD = 0.02, 0.1
BOX_MIN, BOX_MAX = np.array([0.25, -0.45, 0.02]), np.array([0.80, 0.45, 0.70])


def write_checkpoint(path: Path) -> None:
    """A random tiny model for left/right/wrist with 7-D actions of up to 1.5x the clamps, so that
    the clamps are exercised."""
    torch.manual_seed(0)
    model = UnifiedWorldModel(load_model_config("tiny", {"cameras": CAMERAS, "action_dim": 7}))
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.vae.estimate_latent_statistics(torch.rand(4, 3, model.cfg.image_size, model.cfg.image_size))
    reach = np.array([CLAMP_M * 1.5] * 3 + [CLAMP_RAD * 1.5] * 3 + [1.0])
    save_checkpoint(path, model, ActionNormalizer(np.concatenate([-reach[:6], [0.0]]), reach))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class TargetChecker:
    """Every target the node publishes: one step from the previous one within the clamps, inside the box."""

    def __init__(self, node):
        self.previous = None
        self.count = 0
        self.violations = []
        node.create_subscription(PoseStamped, f"{NS}/target", self._on_target, 50)

    def _on_target(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        position, rotation = np.array([p.x, p.y, p.z]), Rotation.from_quat([q.x, q.y, q.z, q.w])
        self.count += 1
        if np.any(position < BOX_MIN - 1e-9) or np.any(position > BOX_MAX + 1e-9):
            self.violations.append(f"outside the box: {position.round(4).tolist()}")
        if self.previous is not None:
            step_m = np.linalg.norm(position - self.previous[0])
            step_rad = (rotation * self.previous[1].inv()).magnitude()
            if step_m > CLAMP_M + 1e-9 or step_rad > CLAMP_RAD + 1e-9:
                self.violations.append(f"step of {step_m:.4f} m, {step_rad:.4f} rad")
        self.previous = (position, rotation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--no-profile", action="store_true", help="Fast DDS defaults instead of the shipped profile")
    args = parser.parse_args()
    if args.no_profile:
        for name in DDS_PROFILE_VARIABLES:
            os.environ.pop(name, None)
    else:
        for name in DDS_PROFILE_VARIABLES:
            os.environ[name] = os.path.abspath(config_path("fastdds_large_images.xml"))
    workdir = Path(tempfile.mkdtemp(prefix="uwm-soak-"))
    write_checkpoint(workdir / "checkpoint")
    rclpy.init()
    topics = {c: f"{NS}/cameras/{c}/image_raw" for c in CAMERAS}
    robot = SyntheticRobot(NS, topics, f"{NS}/pose", f"{NS}/target", f"{NS}/gripper", commander=f"{NS}/uwm_policy",
                           image_shape=(480, 640))
    robot.follow_target = True
    checker = TargetChecker(robot.node)
    camera_list = "[" + ",".join(topics.values()) + "]"
    node = subprocess.Popen(
        [str(Path(sys.executable).parent / "uwm-policy-node"), "--ros-args", "-r", f"__ns:={NS}",
         "--params-file", str(ROOT / "config" / "policy.yaml"),
         "-p", f"checkpoint:={workdir / 'checkpoint'}", "-p", "device:=cpu", "-p", f"camera_topics:={camera_list}",
         "-p", f"ee_pose_topic:={NS}/pose", "-p", f"target_pose_topic:={NS}/target",
         "-p", f"gripper_topic:={NS}/gripper", "-p", "autostart:=true", "-p", "torch_threads:=1"],
        stdout=open(workdir / "node.log", "w"), stderr=subprocess.STDOUT)
    try:
        assert robot.wait_for(lambda: node.poll() is not None or robot.get_state() == "active", 120), \
            (workdir / "node.log").read_text()[-2000:]
        started = time.monotonic()
        marks = {}

        def mark(name):
            status = robot.latest_status() or {}
            marks[name] = {"t": time.monotonic(), "rss": rss_mb(node.pid), "status": status,
                           "published": {c: s.published for c, s in robot.cameras.items()}}

        mark("start")
        threading.Timer(60.0, lambda: mark("1 min")).start()
        while time.monotonic() - started < args.minutes * 60 and node.poll() is None:
            time.sleep(1.0)
        mark("end")
        assert node.poll() is None, (workdir / "node.log").read_text()[-2000:]
    finally:
        node.send_signal(2)
        try:
            node.wait(60)
        except subprocess.TimeoutExpired:
            node.kill()
        robot.close()
        rclpy.shutdown()

    end, elapsed = marks["end"], marks["end"]["t"] - started
    first = marks.get("1 min", marks["start"])  # rates after the first minute: steady state
    span = end["t"] - first["t"]
    status = end["status"]
    print(f"profile: {'Fast DDS defaults' if args.no_profile else 'config/fastdds_large_images.xml'}; "
          f"{elapsed / 60:.1f} min active; {os.cpu_count()} CPUs; rates over the last {span / 60:.1f} min")
    for cam in CAMERAS:
        sent = end["published"][cam] - first["published"][cam]
        received = [mark_["status"].get("frames_received", {}).get(cam, 0) for mark_ in (first, end)]
        got = received[1] - received[0]
        print(f"camera {cam:5}: published {sent / span:.1f} Hz, node received {got / span:.1f} Hz")
    ticks = round(elapsed * 10)
    executed = status.get("actions_executed", 0)
    print(f"chunks used {status.get('chunks_used')}, actions executed {executed} of ~{ticks} ticks: stalled ticks "
          f"{ticks - executed}; inference latency p50 {status.get('inference_latency_p50_s')} s")
    one = marks.get("1 min", {}).get("rss", float("nan"))
    print(f"node RSS: {one:.0f} MB after 1 min, {end['rss']:.0f} MB at {elapsed / 60:.1f} min")
    print(f"targets checked {checker.count}: clamp/box violations {len(checker.violations)}"
          + (f" (first: {checker.violations[0]})" if checker.violations else ""))


if __name__ == "__main__":
    main()
