"""The recorder node over loopback: services, bag contents and metadata, discard, refusal without
publishers, Ctrl-C, and SIGKILL during the third episode (episodes one and two still convert)."""
from __future__ import annotations

import signal
import time

import numpy as np
import rclpy
from doubles.commander import Commander, wait_for
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from teleop_test_helpers import teleop_robot

from uwm_core.data import open_dataset
from uwm_teleop.bag2dataset import convert
from uwm_teleop.bag_reading import Bag
from uwm_teleop.conversion_config import ConvertConfig

CAMERAS = {"left": ("/rec/left", (48, 64), "rgb8"), "wrist": ("/rec/wrist", (48, 64), "mono8")}


def params(output_dir, **extra) -> dict:
    values = {"output_dir": str(output_dir), "camera_names": list(CAMERAS),
              "camera_topics": [t for t, _, _ in CAMERAS.values()], "pose_topic": "/robot/current_pose",
              "target_topic": "/robot/target_pose", "status_period_s": 0.3, "discovery_period_s": 0.2}
    values.update(extra)
    return values


class RecorderClient:
    def __init__(self):
        self.node = rclpy.create_node("recorder_test_client")
        self.start_client = self.node.create_client(Trigger, "/recorder/start")
        self.stop_client = self.node.create_client(SetBool, "/recorder/stop")
        self.discard_client = self.node.create_client(Trigger, "/recorder/discard")
        self.params_client = self.node.create_client(SetParameters, "/recorder/set_parameters")
        self.status = []
        self.node.create_subscription(String, "/recorder/status", lambda m: self.status.append(m.data), 10)

    def call(self, client, request, timeout=30.0, required=True):
        if not client.wait_for_service(timeout_sec=timeout):
            assert not required, f"{client.srv_name} not available"
            return None
        future = client.call_async(request)
        rclpy.spin_until_future_complete(self.node, future, timeout_sec=timeout)
        assert future.done() or not required, f"{client.srv_name} did not answer"
        return future.result() if future.done() else None

    def start(self, task: str, timeout=30.0, required=True):
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=task)
        request = SetParameters.Request(parameters=[Parameter(name="task", value=value)])
        if self.call(self.params_client, request, timeout, required) is None:
            return None
        return self.call(self.start_client, Trigger.Request(), timeout, required)

    def start_when_ready(self, task: str, timeout: float = 60.0):
        """Start once the (possibly restarted) recorder answers and has its publishers; a killed
        recorder's services linger in discovery for a while, so unanswered calls are retried."""
        def attempt():
            response = self.start(task, timeout=3.0, required=False)
            return response if response is not None and response.success else None
        return wait_for(attempt, timeout, "the recorder to accept ~/start", interval=0.3)

    def spin(self, seconds: float, until=None) -> None:
        """Spin for ``seconds``, and on until ``until()`` holds (failing after 30 s more)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline or (until is not None and not until()):
            assert time.monotonic() < deadline + 30, "timed out spinning"
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def close(self):
        self.node.destroy_node()


def finished(output_dir):
    return sorted(p for p in output_dir.iterdir() if not p.name.endswith(".partial"))


def test_recorder_episodes_sigkill_and_interrupt(ros, node_processes, tmp_path):
    bags = tmp_path / "bags"
    robot = teleop_robot(CAMERAS, camera_rate_hz=20.0)
    commander = Commander().start()
    client = RecorderClient()
    try:
        recorder = node_processes("uwm-recorder", params(bags), tmp_path, "recorder")
        assert client.start_when_ready("stack the cups").success
        client.spin(1.5, until=lambda: any("REC episode_0001" in s for s in client.status))
        stop = client.call(client.stop_client, SetBool.Request(data=True))
        assert stop.success and "success" in stop.message
        line = next(s for s in client.status if "REC episode_0001" in s)
        assert "'stack the cups'" in line and "/rec/left:" in line and "Hz" in line and "dropped 0" in line, line

        assert client.start("wipe the table").success
        client.spin(1.0)
        assert client.call(client.stop_client, SetBool.Request(data=True)).success

        assert client.start("to be thrown away").success  # discard removes it
        client.spin(0.5)
        assert client.call(client.discard_client, Trigger.Request()).success
        assert not client.call(client.stop_client, SetBool.Request(data=True)).success  # nothing to stop
        assert [p.name[:12] for p in finished(bags)] == ["episode_0001", "episode_0002"]
        assert not list(bags.glob("*.partial"))

        assert client.start("interrupted by SIGKILL").success  # episode 3 (the discarded one's number)
        wait_for(lambda: list(bags.glob("*.partial/*.mcap")) and
                 list(bags.glob("*.partial/*.mcap"))[0].stat().st_size > 2**20, 60,
                 "episode 3's first MCAP chunk to reach the disk")
        recorder.proc.send_signal(signal.SIGKILL)
        recorder.proc.wait(10)

        recorder = node_processes("uwm-recorder", params(bags), tmp_path, "recorder_restarted")
        assert client.start_when_ready("interrupted by Ctrl-C").success  # episode 4
        client.spin(0.8)
        assert recorder.stop(signal.SIGINT) == 0, recorder.output()[-2000:]
        assert "Traceback" not in recorder.output()
    finally:
        client.close()
        commander.stop()
        robot.close()

    names = sorted(p.name for p in bags.iterdir())
    assert names[0].startswith("episode_0001") and names[1].startswith("episode_0002")
    assert names[2].startswith("episode_0003") and names[2].endswith(".partial")  # the discarded one is gone
    assert names[3].startswith("episode_0004") and not names[3].endswith(".partial")
    with Bag(bags / names[0]) as bag:
        assert bag.custom["uwm.task"] == "stack the cups" and bag.custom["uwm.outcome"] == "success"
        assert set(bag.topics) == {"/rec/left", "/rec/wrist", "/robot/current_pose", "/teleop/delta_ee",
                                   "/robot/target_pose", "/gripper/command"}
        assert bag.topics["/rec/wrist"] == "sensor_msgs/msg/Image"
        assert bag.message_counts["/rec/left"] >= 10 and bag.message_counts["/teleop/delta_ee"] >= 5
        assert (bags / names[0] / f"{names[0]}.mcap").is_file()
    with Bag(bags / names[3]) as bag:
        assert bag.custom["uwm.outcome"] == "incomplete"

    cfg = ConvertConfig(cameras={n: t for n, (t, _, _) in CAMERAS.items()}, image_size=None)
    reports = convert([bags], tmp_path / "dataset", cfg, progress=False)
    status = {r.bag.split("/")[-1][:12]: r for r in reports}
    assert status["episode_0001"].status == status["episode_0002"].status == "converted"
    assert status["episode_0003"].status == "incomplete" and "interrupted" in status["episode_0003"].detail
    assert status["episode_0004"].status == "skipped" and "incomplete" in status["episode_0004"].detail
    ds = open_dataset(tmp_path / "dataset")
    assert [ds.task(i) for i in range(ds.num_episodes)] == ["stack the cups", "wipe the table"]
    # actions are the commander's deltas, by stamp
    sent = {stamp: (delta, gripper) for stamp, delta, gripper in commander.sent}
    for i in range(2):
        episode = ds.episode(i)
        expected = np.array([np.append(*sent[s]) for s in episode.metadata["step_times_ns"]])
        np.testing.assert_allclose(episode.actions, expected, atol=1e-6)
        assert episode.frames["wrist"].shape[1:] == (48, 64, 3)


def test_recorder_refuses_to_start_without_publishers(ros, node_processes, tmp_path):
    recorder = node_processes("uwm-recorder", params(tmp_path / "bags", camera_topics=["/nobody/left", "/nobody/w"]),
                              tmp_path, "recorder")
    client = RecorderClient()
    try:
        response = client.start("anything")
        assert not response.success and "/nobody/left" in response.message and "no publisher" in response.message
        # its output is a file, not a terminal (as under ros2 launch): the status comes as whole lines
        deadline = time.monotonic() + 10
        while "| dropped 0 | queue" not in recorder.output():
            assert time.monotonic() < deadline, recorder.output()
            time.sleep(0.1)
        status_lines = [line for line in recorder.output().splitlines() if "[recorder] idle, 0 saved |" in line]
        assert status_lines and "\r" not in recorder.output() and "\033[K" not in recorder.output()
        assert recorder.stop() == 0
    finally:
        client.close()
    assert not any((tmp_path / "bags").iterdir())
