"""The sim's ROS interface shared by the sim node and the scripted expert node: default topics,
quality of service and message conversions."""
from __future__ import annotations

import json

import numpy as np
from geometry_msgs.msg import Pose, PoseArray, PoseStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

SIM_NODE_NAME = "uwm_sim"
# relative: the sim's private topics as seen from a node in the sim's namespace
OBJECT_POSES_TOPIC = f"{SIM_NODE_NAME}/object_poses"
EPISODE_TOPIC = f"{SIM_NODE_NAME}/episode"
GRIPPER_STATE_TOPIC = "/franka_gripper/joint_states"

# Reliable publishers match reliable and best-effort (sensor-data) subscribers alike.
STATE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# The latest episode status reaches late joiners too.
EPISODE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def fill_pose(pose: Pose, position, quat_xyzw) -> Pose:
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in position)
    (pose.orientation.x, pose.orientation.y, pose.orientation.z,
     pose.orientation.w) = (float(v) for v in quat_xyzw)
    return pose


def pose_arrays(pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    """(position, quat xyzw) of a geometry_msgs/Pose."""
    p, q = pose.position, pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])


def pose_stamped(position, quat_xyzw, frame_id: str, stamp) -> PoseStamped:
    msg = PoseStamped()
    msg.header.frame_id, msg.header.stamp = frame_id, stamp
    fill_pose(msg.pose, position, quat_xyzw)
    return msg


def pose_array(poses, frame_id: str, stamp) -> PoseArray:
    msg = PoseArray()
    msg.header.frame_id, msg.header.stamp = frame_id, stamp
    msg.poses = [fill_pose(Pose(), position, quat) for position, quat in poses]
    return msg


def episode_message(**status) -> String:
    """The ~/episode status (JSON), sent with every frame set: task, instruction, seed, episode
    number, step in the episode, success, object names and the frame set's stamp in seconds."""
    return String(data=json.dumps(status))


def parse_episode(msg: String) -> dict:
    return json.loads(msg.data)
