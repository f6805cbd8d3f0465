"""uwm_sim: a simulated Franka (digital twin) with the ROS interface of the real robot.

    uwm-sim-node --ros-args --params-file config/sim.yaml -p task:=stack
    ros2 run uwm_ros sim_node --ros-args -p real_time:=false

A Panda in MuJoCo (robosuite, uwm_ros.sim.franka_env) behind the topics of a franka_ros2
Cartesian impedance setup, so the policy node, the teleop node and the recorder run against it
unchanged:

Publishes (every control step, all with the same header stamp):
  camera_topics[i]     sensor_msgs/Image rgb8, one per camera (frame ``<camera>_camera``)
  ee_pose_topic        geometry_msgs/PoseStamped, measured hand pose (tool centre point) in base_frame
  gripper_state_topic  sensor_msgs/JointState, finger positions (m) as franka_gripper's joint_states
  ~/task_success       std_msgs/Bool
  ~/object_poses       geometry_msgs/PoseArray in base_frame, objects in ~/episode's "objects" order
  ~/episode            std_msgs/String JSON {task, instruction, seed, episode, step, success,
                       objects, stamp_ns} (transient local: late joiners get the latest)
  /clock               rosgraph_msgs/Clock, only when real_time is false
Subscribes:
  target_pose_topic    geometry_msgs/PoseStamped (command_mode pose_target): the impedance target
  delta_topic          geometry_msgs/TwistStamped (command_mode delta): composed onto the target
  gripper_topic        std_msgs/Float32, 0 open .. 1 closed (binary at 0.5)
Services:
  ~/reset              std_srvs/Trigger: new episode with the next seed (see ``seed``)

Frames: base_frame is the Panda's base (link0), x forward, z up; the table top is z = 0.

Time. Simulated time advances one control period per step. With ``real_time: true`` steps are
paced by the wall clock and stamped with it, exactly like a real robot and its cameras: consumers
use their ordinary clock. With ``real_time: false`` the sim steps as fast as it can render and
publishes /clock: every stamp is simulated time (starting at the wall time of the node's start),
and consumers must run with ``use_sim_time: true``; then frame ages, stamp skews and control
ticks are measured on the same clock as in real time, so the policy node behaves the same. In
this mode the sim also runs in lockstep with whoever commands it: after publishing a step it waits
(at most ``lockstep_timeout_s`` of wall time, and only while some node publishes on the command
topic) for the next arm command, so a commander that answers every frame is never outrun.
Commands stamped before the current episode started are dropped (stale commands of the previous
episode); in fast mode a commander on the wall clock would be too, and the sim says so.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable

import numpy as np
import rclpy
from geometry_msgs.msg import PoseArray, PoseStamped, TwistStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock as RosClock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float32, String
from std_srvs.srv import Trigger

from uwm_core.image_codec import encode_raw
from uwm_core.stop_request import StopRequest
from uwm_ros.robot.spinning import spin

from uwm_ros.sim.franka_env import DEFAULT_CAMERAS, SCENE_CAMERA_FOVY_DEG, SCENE_CAMERAS, SimFranka
from uwm_ros.sim.rendering import RenderingUnavailable
from uwm_ros.sim.ros_interface import (EPISODE_QOS, GRIPPER_STATE_TOPIC, SIM_NODE_NAME, STATE_QOS, episode_message,
                                pose_array, pose_arrays, pose_stamped)

COMMAND_MODES = ("pose_target", "delta")
PARAMETERS = {
    "task": ("lift", "simulated task: lift | stack"),
    "seed": (0, "seed of the first episode; each ~/reset uses the next one; setting it makes the next "
                "~/reset use exactly this seed"),
    "control_rate_hz": (10.0, "control rate: one simulation step per period (must divide 500 Hz)"),
    "real_time": (True, "true: pace steps by the wall clock and stamp with it; false: step as fast as possible, "
                        "stamp with simulated time and publish /clock (consumers need use_sim_time:=true)"),
    "lockstep_timeout_s": (0.5, "real_time false: wait at most this long (wall clock) for the next arm command "
                                "before stepping anyway (only while a commander is connected)"),
    "cameras": (list(DEFAULT_CAMERAS), "camera names (in image topics and frame ids)"),
    "camera_sources": (list(DEFAULT_CAMERAS.values()), "scene camera rendered for each entry of cameras: "
                       "scene_left, scene_right, robot0_eye_in_hand, agentview, sideview, frontview, birdview"),
    "camera_topics": ([f"/cameras/{name}/image_raw" for name in DEFAULT_CAMERAS], "image topic of each camera"),
    "scene_left_camera": (list(SCENE_CAMERAS["scene_left"]), "camera scene_left: [x, y, z, look_x, look_y, look_z], "
                          "its position and the point it looks at (m, base frame)"),
    "scene_right_camera": (list(SCENE_CAMERAS["scene_right"]), "camera scene_right: [x, y, z, look_x, look_y, "
                           "look_z] (m, base frame)"),
    "scene_camera_fovy_deg": (SCENE_CAMERA_FOVY_DEG, "vertical field of view of the scene cameras (degrees)"),
    "image_width": (96, "rendered image width (px)"),
    "image_height": (96, "rendered image height (px)"),
    "fast_render": (True, "simplified meshes and flat textures (3-5x faster on CPU, same look at low resolution)"),
    "base_frame": ("fr3_link0", "frame id of all poses (the robot base)"),
    "command_mode": ("pose_target", "pose_target: follow target_pose_topic; delta: compose delta_topic twists "
                                    "onto the target"),
    "target_pose_topic": ("/cartesian_impedance_controller/target_pose", "target pose input (command_mode pose_target)"),
    "delta_topic": ("/uwm_policy/delta_ee", "per-step delta input [dx dy dz rx ry rz] (command_mode delta)"),
    "gripper_topic": ("/gripper/command", "gripper command input, std_msgs/Float32 0 open .. 1 closed"),
    "ee_pose_topic": ("/franka_robot_state_broadcaster/current_pose", "measured end-effector pose output"),
    "gripper_state_topic": (GRIPPER_STATE_TOPIC, "finger joint state output (sensor_msgs/JointState)"),
    "finger_joint_names": (["fr3_finger_joint1", "fr3_finger_joint2"], "joint names in gripper_state_topic"),
}


class SimNode(Node):
    """The sim node: ROS interface around SimFranka; ``run()`` steps it until shutdown."""

    def __init__(self, **kwargs):
        super().__init__(SIM_NODE_NAME, **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        if p["command_mode"] not in COMMAND_MODES:
            raise ValueError(f"parameter command_mode={p['command_mode']!r} is not one of {list(COMMAND_MODES)}")
        if not len(p["cameras"]) == len(p["camera_sources"]) == len(p["camera_topics"]):
            raise ValueError(f"parameters cameras ({len(p['cameras'])}), camera_sources ({len(p['camera_sources'])}) "
                             f"and camera_topics ({len(p['camera_topics'])}) must have one entry per camera")
        if len(p["finger_joint_names"]) != 2:
            raise ValueError(f"parameter finger_joint_names={p['finger_joint_names']} needs two names")
        self.sim = SimFranka(p["task"], cameras=dict(zip(p["cameras"], p["camera_sources"])),
                             width=p["image_width"], height=p["image_height"], control_rate_hz=p["control_rate_hz"],
                             fast_render=p["fast_render"],
                             scene_cameras={"scene_left": p["scene_left_camera"], "scene_right": p["scene_right_camera"]},
                             scene_camera_fovy_deg=p["scene_camera_fovy_deg"])
        self._real_time = p["real_time"]
        self._lockstep_timeout_s = p["lockstep_timeout_s"]
        self._base_frame = p["base_frame"]
        self._finger_joints = list(p["finger_joint_names"])
        self._period_ns = round(self.sim.period_s * 1e9)

        self._image_pubs = {cam: self.create_publisher(Image, topic, STATE_QOS)
                            for cam, topic in zip(p["cameras"], p["camera_topics"])}
        self._pose_pub = self.create_publisher(PoseStamped, p["ee_pose_topic"], STATE_QOS)
        self._gripper_pub = self.create_publisher(JointState, p["gripper_state_topic"], STATE_QOS)
        self._success_pub = self.create_publisher(Bool, "~/task_success", STATE_QOS)
        self._objects_pub = self.create_publisher(PoseArray, "~/object_poses", STATE_QOS)
        self._episode_pub = self.create_publisher(String, "~/episode", EPISODE_QOS)
        self._clock_pub = None if self._real_time else self.create_publisher(Clock, "/clock", STATE_QOS)

        # Commands arrive on the executor thread and are applied by the stepping thread.
        self._command_lock = threading.Lock()
        self._pending_target = None
        self._pending_deltas: list[np.ndarray] = []
        self._pending_gripper: float | None = None
        self._command_arrived = threading.Event()
        if p["command_mode"] == "pose_target":
            self._arm_topic = p["target_pose_topic"]
            self.create_subscription(PoseStamped, self._arm_topic, self._on_target, 10)
        else:
            self._arm_topic = p["delta_topic"]
            self.create_subscription(TwistStamped, self._arm_topic, self._on_delta, 10)
        self.create_subscription(Float32, p["gripper_topic"], self._on_gripper, 10)
        self.create_service(Trigger, "~/reset", self._on_reset)

        self._sim_lock = threading.Lock()
        self._stopping = threading.Event()
        self._wall_clock = RosClock(clock_type=ClockType.SYSTEM_TIME)
        self._start_ns = self._wall_clock.now().nanoseconds
        self._sim_steps = 0  # steps since start, all episodes: simulated time when real_time is false
        self._episode = 0
        self._episode_start_ns = 0
        self._next_seed = int(p["seed"])
        self.add_on_set_parameters_callback(self._on_set_parameters)
        with self._sim_lock:
            self._start_episode()
        self.get_logger().info(
            f"simulated Franka: task {self.sim.task.name}, {len(self._image_pubs)} cameras at "
            f"{p['image_width']}x{p['image_height']}, {1 / self.sim.period_s:g} Hz, "
            f"{'real time' if self._real_time else 'fast (simulated time on /clock; use_sim_time:=true)'}, "
            f"following {self._arm_topic} ({p['command_mode']}); objects: {', '.join(self.sim.task.objects)}")

    # ------------------------------------------------------------------ time
    def _stamp(self) -> Time:
        # The sim owns simulated time: it reads the system clock even if use_sim_time is set on it.
        if self._real_time:
            return Time(nanoseconds=self._wall_clock.now().nanoseconds)
        return Time(nanoseconds=self._start_ns + self._sim_steps * self._period_ns)

    # ------------------------------------------------------------------ episodes
    def _on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name == "seed" and param.type_ != Parameter.Type.INTEGER:
                return SetParametersResult(successful=False, reason=f"seed must be an integer, got {param.value!r}")
            if param.name in PARAMETERS and param.name != "seed":
                return SetParametersResult(successful=False, reason=f"{param.name} is read at start only")
        for param in params:
            if param.name == "seed":
                self._next_seed = param.value
        return SetParametersResult(successful=True)

    def _start_episode(self) -> None:
        """Reset the sim with the next seed and publish the episode's first frame set (lock held)."""
        seed, self._next_seed = self._next_seed, self._next_seed + 1
        self.sim.reset(seed)
        with self._command_lock:
            self._pending_target, self._pending_deltas, self._pending_gripper = None, [], None
        self._episode += 1
        if not self._real_time:
            self._sim_steps += 1  # the reset takes one period of simulated time: stamps keep increasing
        stamp = self._stamp()
        self._episode_start_ns = stamp.nanoseconds
        self._publish_state(stamp)

    def _on_reset(self, request, response):
        with self._sim_lock:
            self._start_episode()
            response.message = f"task {self.sim.task.name} seed {self.sim.seed} episode {self._episode}"
        response.success = True
        self.get_logger().info(f"reset: {response.message}")
        return response

    # ------------------------------------------------------------------ commands
    def _fresh(self, header, topic: str) -> bool:
        """A command in base_frame and not stamped before the current episode started."""
        if header.frame_id and header.frame_id != self._base_frame:
            self.get_logger().error(f"command on {topic} is in frame {header.frame_id!r}, expected "
                                    f"{self._base_frame!r}: ignored", throttle_duration_sec=2.0)
            return False
        stamp_ns = Time.from_msg(header.stamp).nanoseconds
        if stamp_ns and stamp_ns < self._episode_start_ns:
            behind_s = (self._episode_start_ns - stamp_ns) * 1e-9
            hint = "" if self._real_time else " (with real_time false, commanders must use use_sim_time:=true)"
            self.get_logger().warning(f"command on {topic} is stamped {behind_s:.3f} s before the current episode "
                                      f"started: dropped{hint}", throttle_duration_sec=2.0)
            return False
        return True

    def _on_target(self, msg: PoseStamped) -> None:
        position, quat = pose_arrays(msg.pose)
        if not (np.isfinite(position).all() and np.isfinite(quat).all() and np.linalg.norm(quat) > 1e-6):
            self.get_logger().error(f"non-finite target pose on {self._arm_topic}: ignored", throttle_duration_sec=2.0)
            return
        if self._fresh(msg.header, self._arm_topic):
            with self._command_lock:
                self._pending_target = (position, quat)
            self._command_arrived.set()

    def _on_delta(self, msg: TwistStamped) -> None:
        t = msg.twist
        delta = np.array([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z])
        if not np.isfinite(delta).all():
            self.get_logger().error(f"non-finite delta on {self._arm_topic}: ignored", throttle_duration_sec=2.0)
            return
        if self._fresh(msg.header, self._arm_topic):
            with self._command_lock:
                self._pending_deltas.append(delta)
            self._command_arrived.set()

    def _on_gripper(self, msg: Float32) -> None:
        if np.isfinite(msg.data):
            with self._command_lock:
                self._pending_gripper = float(msg.data)

    def _apply_commands(self) -> None:
        with self._command_lock:
            target, deltas, gripper = self._pending_target, self._pending_deltas, self._pending_gripper
            self._pending_target, self._pending_deltas, self._pending_gripper = None, [], None
        if target is not None:
            self.sim.set_target(*target)
        for delta in deltas:
            self.sim.apply_delta(delta)
        if gripper is not None:
            self.sim.set_gripper(gripper)

    # ------------------------------------------------------------------ stepping
    def _publish_state(self, stamp: Time) -> None:
        """Publish one frame set; /clock first, so consumers' clocks have reached the stamp."""
        header_stamp = stamp.to_msg()
        self._command_arrived.clear()  # commands from now on answer this frame set
        if self._clock_pub is not None:
            self._clock_pub.publish(Clock(clock=header_stamp))
        for camera, rgb in self.sim.render().items():
            encoding, height, width, step, data = encode_raw(rgb, "rgb8")
            image = Image(encoding=encoding, height=height, width=width, step=step, data=data)
            image.header.stamp, image.header.frame_id = header_stamp, f"{camera}_camera"
            self._image_pubs[camera].publish(image)
        success = self.sim.success()
        objects = self.sim.object_poses()
        fingers = JointState(name=self._finger_joints, position=[float(v) for v in self.sim.finger_positions()])
        fingers.header.stamp = header_stamp
        self._gripper_pub.publish(fingers)
        self._objects_pub.publish(pose_array(objects, self._base_frame, header_stamp))
        self._success_pub.publish(Bool(data=success))
        self._episode_pub.publish(episode_message(
            task=self.sim.task.name, instruction=self.sim.task.instruction, seed=self.sim.seed,
            episode=self._episode, step=self.sim.steps, success=success, objects=list(self.sim.task.objects),
            stamp_ns=stamp.nanoseconds))
        self._pose_pub.publish(pose_stamped(*self.sim.ee_pose(), self._base_frame, header_stamp))

    def run(self, until: Callable[[], bool] = lambda: False) -> None:
        """Step the simulation until the node's context shuts down, ``stop()`` or ``until()``: one control
        period per step, paced by the wall clock (real_time) or by the commander (lockstep) / as fast as
        possible."""
        period_s = self.sim.period_s
        next_tick = time.monotonic()
        while self.context.ok() and not self._stopping.is_set() and not until():
            if self._real_time:
                next_tick += period_s
                lag_s = time.monotonic() - next_tick
                if lag_s < 0:
                    self._stopping.wait(-lag_s)
                elif lag_s > period_s:
                    self.get_logger().warning(f"simulation runs behind real time by {lag_s:.2f} s (rendering too "
                                              "slow for control_rate_hz); steps stay one period of robot time",
                                              throttle_duration_sec=5.0)
                    next_tick = time.monotonic()
            elif self.count_publishers(self._arm_topic) > 0:
                self._command_arrived.wait(self._lockstep_timeout_s)
            with self._sim_lock:
                self._apply_commands()
                self.sim.step()
                self._sim_steps += 1
                self._publish_state(self._stamp())

    def stop(self) -> None:
        self._stopping.set()
        self._command_arrived.set()  # ends a lockstep wait

    def close(self) -> None:
        with self._sim_lock:
            self.sim.close()


def main(args=None) -> None:
    # Ctrl-C / SIGTERM only ask the loop to stop (StopRequest): a KeyboardInterrupt raised mid-step
    # could leave _sim_lock taken and the shutdown below waiting for it.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = StopRequest()
    try:
        node = SimNode()
    except (ValueError, RenderingUnavailable) as err:
        rclpy.logging.get_logger(SIM_NODE_NAME).fatal(str(err))
        rclpy.try_shutdown()
        sys.exit(2)
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    spinner = threading.Thread(target=spin, args=(executor,), daemon=True)
    spinner.start()
    try:
        node.run(until=lambda: stop.requested)
    except (KeyboardInterrupt, ExternalShutdownException):  # a second Ctrl-C; an external shutdown
        pass
    finally:
        node.stop()
        executor.shutdown()
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
        stop.close()


if __name__ == "__main__":
    main()
