"""Fixtures of the sim tests: an rclpy context of their own (other test areas use the default one)."""
import pytest
import rclpy


@pytest.fixture(scope="module")
def ros_context():
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()
