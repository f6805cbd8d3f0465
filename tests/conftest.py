"""Test-session environment: DDS confined to loopback, a ROS domain of our own, headless GL."""
import os

import pytest

# Set before any test module imports rclpy or MuJoCo.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ["ROS_DOMAIN_ID"] = os.environ.get("UWM_TEST_ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded in tests


@pytest.fixture(scope="session")
def ros():
    """rclpy's default context, initialised once for the whole test session."""
    import rclpy

    rclpy.init()
    yield
    rclpy.try_shutdown()
