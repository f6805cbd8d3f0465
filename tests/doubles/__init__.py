"""Test doubles: stand-ins for the robot (real ROS 2 over loopback) and a synthetic world for training."""
