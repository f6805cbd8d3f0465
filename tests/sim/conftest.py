"""Fixtures of the sim tests: an rclpy context (and ROS domain) of their own per module."""
import pytest
import rclpy

from ros_domain import claimed_domain


@pytest.fixture(scope="module")
def ros_context():
    with claimed_domain() as domain:
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=domain)
        yield context
        context.try_shutdown()
