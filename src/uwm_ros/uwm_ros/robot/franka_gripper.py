"""The Franka gripper through franka_gripper's Grasp/Move actions (gripper_mode franka_action).

franka_msgs exists only on the robot image (not on any Python registry), so it is imported here
and nowhere else; ``franka_msgs_available`` tells the settings check whether this mode can run.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from rclpy.action import ActionClient

try:
    from franka_msgs.action import Grasp, Move
except ImportError:
    Grasp = Move = None

if TYPE_CHECKING:
    from .command_settings import CommandSettings


def franka_msgs_available() -> bool:
    return Grasp is not None


class FrankaGripper:
    """franka_gripper actions: Grasp when closing, Move to the open width when opening.

    A goal is sent only when the binary state changes; a goal still in flight is cancelled first,
    so the newest command always wins.
    """

    def __init__(self, node, settings: CommandSettings):
        self.node, self.settings = node, settings
        ns = settings.gripper_action_ns.rstrip("/")
        self._grasp_name, self._move_name = f"{ns}/grasp", f"{ns}/move"
        self._grasp = ActionClient(node, Grasp, self._grasp_name)
        self._move = ActionClient(node, Move, self._move_name)
        self._closed: bool | None = None
        self._goal_handle = None  # the accepted goal still running
        self._latest = 0  # id of the newest goal sent; older ones are cancelled when they are accepted
        self._lock = threading.Lock()

    def command(self, closed: bool) -> None:
        if closed == self._closed:
            return
        client, name = (self._grasp, self._grasp_name) if closed else (self._move, self._move_name)
        if not client.server_is_ready():
            self.node.get_logger().error(f"gripper action server {name} is not available",
                                         throttle_duration_sec=5.0)
            return  # retried on the next step: the state is not recorded as sent
        self._closed = closed
        s = self.settings
        if closed:
            goal = Grasp.Goal(width=0.0, speed=s.gripper_speed, force=s.gripper_force)
            goal.epsilon.inner, goal.epsilon.outer = 0.005, s.gripper_open_width
        else:
            goal = Move.Goal(width=s.gripper_open_width, speed=s.gripper_speed)
        with self._lock:
            self._latest += 1
            goal_id = self._latest
            if self._goal_handle is not None:
                self._goal_handle.cancel_goal_async()
                self._goal_handle = None
        client.send_goal_async(goal).add_done_callback(lambda future: self._on_goal_response(future, goal_id))

    def _on_goal_response(self, future, goal_id: int) -> None:
        handle = future.result()
        if handle is None or not handle.accepted:
            self.node.get_logger().error("gripper goal rejected by the franka_gripper action server")
            return
        with self._lock:
            if goal_id != self._latest:  # a newer command was sent meanwhile: this one is obsolete
                handle.cancel_goal_async()
                return
            self._goal_handle = handle
        handle.get_result_async().add_done_callback(lambda _f: self._on_done(handle))

    def _on_done(self, handle) -> None:
        with self._lock:
            if self._goal_handle is handle:
                self._goal_handle = None

    def destroy(self) -> None:
        self._grasp.destroy()
        self._move.destroy()
