"""Test-session environment: DDS confined to loopback, a ROS domain of its own for every test,
headless GL."""
import os

import pytest

from ros_domain import claimed_domain

# Set before any test module imports rclpy or MuJoCo.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded in tests


@pytest.fixture(autouse=True)
def ros_domain():
    """This test's ROS domain, also in the environment of every process it starts."""
    with claimed_domain() as domain:
        yield domain


@pytest.fixture
def ros(ros_domain):
    """rclpy's default context, initialised for this test's domain."""
    import rclpy

    rclpy.init(domain_id=ros_domain)
    yield
    rclpy.try_shutdown()
