"""Spinning an rclpy executor while entities are created and destroyed from other threads."""
from typing import Callable

from rclpy.executors import Executor, ExternalShutdownException
from rclpy.exceptions import InvalidHandle


def spin(executor: Executor, until: Callable[[], bool] | None = None, check_period_s: float = 0.2) -> None:
    """``executor.spin()`` that survives rclpy's destruction race (ros2/rclpy#1284).

    A publisher or subscription destroyed by another thread (a lifecycle transition run by
    another thread of a MultiThreadedExecutor, a test tearing down a probe) while this thread
    builds its wait set makes rclpy raise InvalidHandle out of ``spin`` and the spinning thread
    dies: every callback of its nodes stops for good. The entity is already gone from its node
    by then, so building the wait set again is all it takes. Returns when the executor or its
    context shuts down (also by rclpy's Ctrl-C handler), or once ``until()`` is true: it is
    checked at least every ``check_period_s``, also while nothing wakes the executor.
    """
    while True:
        try:
            if until is None:
                executor.spin()
                return
            while executor.context.ok() and not until():
                executor.spin_once(timeout_sec=check_period_s)
            return
        except ExternalShutdownException:
            return
        except InvalidHandle:
            continue
