#!/bin/bash
# Source ROS 2 Jazzy, the franka/CRISP workspace, the venv and this workspace, then run the command.
set -e
source /opt/ros/jazzy/setup.bash
source /opt/robot_ws/install/setup.bash
source /opt/venv/bin/activate
source /opt/uwm_ws/install/setup.bash
exec "$@"
