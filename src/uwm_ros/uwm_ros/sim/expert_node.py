"""sim_expert: the scripted expert driving the simulated Franka like a teleoperator.

    uwm-sim-expert --ros-args --params-file config/sim.yaml
    (with real_time: false in the sim, add -p use_sim_time:=true)

It reads the sim's privileged state (``~/object_poses``, ``~/episode``, the gripper's joint
states) and the measured pose, and commands through the robot interface's CommandInterface, the exact
interface of the teleop and policy nodes: ``~/delta_ee``, the target pose (pose_target mode) and
the gripper topic. So the recorder records its demonstrations exactly as a human's (record
``/sim_expert/delta_ee`` as the delta topic). It acts once per simulated step, on the frame set
whose stamps all agree, and starts over whenever ``~/episode`` announces a new episode; the
command parameters (topics, base_frame, per-step limits, workspace) are the CommandInterface's,
so config/sim.yaml configures the sim and its expert together.
"""
from __future__ import annotations

import numpy as np
import rclpy
from geometry_msgs.msg import PoseArray
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from uwm_core.spatial import apply_delta
from uwm_ros.robot import CommandInterface, declare_command_parameters
from uwm_ros.robot.messages import stamp_ns

from .expert import ExpertObservation, ScriptedExpert
from .ros_interface import (EPISODE_QOS, EPISODE_TOPIC, GRIPPER_STATE_TOPIC, OBJECT_POSES_TOPIC, STATE_QOS,
                            parse_episode, pose_arrays)

POLL_PERIOD_S = 0.01  # wall-clock check for a complete frame set (the measured pose arrives on its own)
PARAMETERS = {
    "object_poses_topic": (OBJECT_POSES_TOPIC, "the sim's object poses (geometry_msgs/PoseArray)"),
    "episode_topic": (EPISODE_TOPIC, "the sim's episode status (std_msgs/String JSON)"),
    "gripper_state_topic": (GRIPPER_STATE_TOPIC, "finger joint states (sensor_msgs/JointState)"),
}


class ExpertNode(Node):
    """Acts on each complete frame set of the sim; all callbacks run on one executor thread."""

    def __init__(self, **kwargs):
        super().__init__("sim_expert", **kwargs)
        declare_command_parameters(self)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        self._out = CommandInterface(self)
        self._status = self._objects = self._fingers = None
        self._last_stamp_ns = 0
        self._episode = None
        self._target = None  # the pose commanded so far this episode (None: seed from the measured pose)
        self._expert: ScriptedExpert | None = None
        topic = {name: self.get_parameter(name).value for name in PARAMETERS}
        self.create_subscription(String, topic["episode_topic"], self._on_status, EPISODE_QOS)
        self.create_subscription(PoseArray, topic["object_poses_topic"], self._on_objects, STATE_QOS)
        self.create_subscription(JointState, topic["gripper_state_topic"], self._on_fingers, STATE_QOS)
        self.create_timer(POLL_PERIOD_S, self._try_act, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _on_status(self, msg: String) -> None:
        self._status = parse_episode(msg)
        self._try_act()

    def _on_objects(self, msg: PoseArray) -> None:
        self._objects = msg
        self._try_act()

    def _on_fingers(self, msg: JointState) -> None:
        self._fingers = msg
        self._try_act()

    def _try_act(self) -> None:
        """One action per simulated step, once its status, objects, fingers and pose all arrived."""
        pose, status = self._out.measured_pose(), self._status
        if pose is None or status is None or self._objects is None or self._fingers is None:
            return
        step_ns = status["stamp_ns"]
        if not (step_ns > self._last_stamp_ns and step_ns == pose.stamp.nanoseconds
                == stamp_ns(self._objects.header) == stamp_ns(self._fingers.header)):
            return
        self._last_stamp_ns = step_ns
        if status["episode"] != self._episode:
            if self._expert is None or self._expert.task.name != status["task"]:
                s = self._out.settings
                self._expert = ScriptedExpert(status["task"], s.max_translation_per_step, s.max_rotation_per_step)
            self._expert.reset()
            self._out.reset()  # seeds the interface's target from this frame set's measured pose
            self._target = None
            self._episode = status["episode"]
            self.get_logger().info(f"episode {self._episode}: {status['instruction']} (seed {status['seed']})")
        observation = ExpertObservation(pose.position, pose.quat_xyzw, np.asarray(self._fingers.position),
                                        [pose_arrays(p) for p in self._objects.poses])
        sent = self._out.send(self._expert.act(observation, self._target))
        if sent is not None:
            # The target a pose_target or delta consumer now holds: the sent (clamped) delta composed
            # onto the previous one, as the command interface composes it in pose_target mode.
            self._target = apply_delta(*(self._target or (pose.position, pose.quat_xyzw)), sent.delta)


def main(args=None) -> None:
    rclpy.init(args=args)
    try:
        node = ExpertNode()
    except ValueError as err:
        rclpy.logging.get_logger("sim_expert").fatal(str(err))
        rclpy.try_shutdown()
        raise SystemExit(2)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
