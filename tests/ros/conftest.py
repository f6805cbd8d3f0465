"""Fixtures for the policy node tests: a small random checkpoint, rclpy, and a running system
(the policy node in its own executor + a SyntheticRobot publishing cameras and the pose)."""
import itertools
import threading

import pytest
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter

from policy_test_helpers import CAMERAS, RecordingModel, make_checkpoint
from uwm_ros.policy.node import PolicyNode
from doubles.synthetic_robot import SyntheticRobot
from uwm_ros.robot.spinning import spin

_ids = itertools.count(1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    # paper-like horizons (16 actions, execute 8) on the tiny network
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "tiny",
                           {"action_horizon": 16, "execute_steps": 8})


class System:
    """The policy node under test and a SyntheticRobot around it, in a namespace of their own."""

    def __init__(self, checkpoint, params=None, load_world_model=None, camera_suffix=None, image_shape=(48, 64)):
        self.ns = f"/t{next(_ids)}"
        suffix = camera_suffix or {}
        self.camera_topics = {c: f"{self.ns}/cam/{c}/image_raw{suffix.get(c, '')}" for c in CAMERAS}
        self.pose_topic = f"{self.ns}/current_pose"
        self.target_topic = f"{self.ns}/target_pose"
        self.gripper_topic = f"{self.ns}/gripper"
        values = {
            "checkpoint": checkpoint,
            "device": "cpu",
            "camera_topics": list(self.camera_topics.values()),
            "ee_pose_topic": self.pose_topic,
            "target_pose_topic": self.target_topic,
            "gripper_topic": self.gripper_topic,
            "torch_threads": 1,
            "seed": 0,
            "status_period_s": 0.2,
            **(params or {}),
        }
        self.params = values
        self.node = PolicyNode(load_world_model=load_world_model, namespace=self.ns,
                               parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        self.executor = MultiThreadedExecutor(num_threads=4)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=spin, args=(self.executor,), daemon=True)
        self.thread.start()
        self.robot = SyntheticRobot(self.ns, self.camera_topics, self.pose_topic, self.target_topic,
                                    self.gripper_topic, commander=f"{self.ns}/uwm_policy", image_shape=image_shape)

    def close(self):
        """Shut the node down (waiting for a running inference, so none outlives the test)."""
        state = self.robot.get_state()
        if state == "active":
            self.robot.change_state("deactivate")
        if state in ("active", "inactive"):
            self.robot.change_state("shutdown", timeout_s=600)
        self.robot.close()
        self.executor.shutdown()
        self.thread.join(5.0)
        self.node.destroy_node()


@pytest.fixture
def make_system(ros):
    systems = []

    def make(checkpoint, **kwargs):
        system = System(checkpoint, **kwargs)
        systems.append(system)
        return system

    yield make
    for system in systems:
        system.close()



@pytest.fixture
def recording_loader():
    """load_world_model for PolicyNode that wraps the real checkpoint loader in a RecordingModel."""
    from uwm_core import WorldModel

    def make(**kwargs):
        models = []

        def load(path, device, precision, compile):
            model = RecordingModel(WorldModel.from_checkpoint(path, device, precision, compile), **kwargs)
            models.append(model)
            return model

        load.models = models
        return load

    return make
