"""uwm_ros.robot.spinning.spin keeps an executor's callbacks running while another thread creates and
destroys publishers and subscriptions (ros2/rclpy#1284: plain ``executor.spin()`` raises
InvalidHandle and its thread dies; seen killing the sim node's executor in a test teardown)."""
import sys
import threading
import time

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import String

from doubles.commander import wait_for
from uwm_ros.robot.spinning import spin


def test_spinning_survives_entities_destroyed_by_another_thread(ros):
    node = Node("churned")
    ticks = []
    node.create_timer(0.0002, lambda: ticks.append(None))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=spin, args=(executor,), daemon=True)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: plain spin() then dies within ~1 s here
    try:
        spinner.start()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            node.destroy_publisher(node.create_publisher(String, "churn", 10))
            node.destroy_subscription(node.create_subscription(String, "churn", lambda m: None, 10))
        assert spinner.is_alive()
        fired = len(ticks)
        wait_for(lambda: len(ticks) > fired + 20, 10.0, "its timer to keep firing")
    finally:
        sys.setswitchinterval(interval)
        executor.shutdown()
        spinner.join(5)
        node.destroy_node()


def test_spinning_until_a_condition_returns_while_nothing_wakes_the_executor(ros):
    """The policy node spins until a stop request; an idle node (no timer, no message) must still
    see it within the check period."""
    node = Node("idle")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = threading.Event()
    spinner = threading.Thread(target=spin, args=(executor,), kwargs={"until": stop.is_set, "check_period_s": 0.1},
                               daemon=True)
    try:
        spinner.start()
        time.sleep(0.5)
        assert spinner.is_alive()  # nothing to do, yet still spinning
        asked = time.monotonic()
        stop.set()
        spinner.join(2.0)
        assert not spinner.is_alive() and time.monotonic() - asked < 1.0
    finally:
        executor.shutdown()
        node.destroy_node()
