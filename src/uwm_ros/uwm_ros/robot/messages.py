"""ROS message helpers of the robot interface: header stamps and the command messages."""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped

NS_PER_S = 1_000_000_000


def stamp_ns(header) -> int:
    """A std_msgs/Header's stamp in integer nanoseconds."""
    return header.stamp.sec * NS_PER_S + header.stamp.nanosec


def twist_msg(delta6: np.ndarray, frame: str, stamp) -> TwistStamped:
    """geometry_msgs/TwistStamped: linear = the translation, angular = the rotation vector."""
    msg = TwistStamped()
    msg.header.frame_id, msg.header.stamp = frame, stamp
    msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = (float(v) for v in delta6[:3])
    msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = (float(v) for v in delta6[3:6])
    return msg


def pose_msg(position: np.ndarray, quat_xyzw: np.ndarray, frame: str, stamp) -> PoseStamped:
    msg = PoseStamped()
    msg.header.frame_id, msg.header.stamp = frame, stamp
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in position)
    (msg.pose.orientation.x, msg.pose.orientation.y,
     msg.pose.orientation.z, msg.pose.orientation.w) = (float(v) for v in quat_xyzw)
    return msg
