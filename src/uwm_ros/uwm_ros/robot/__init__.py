"""The robot interface every commanding node shares (policy, teleop, the sim's scripted expert).

    command_interface  CommandInterface: measured pose in, clamped commands out over ROS
    command_math       the step arithmetic without ROS (pose checks, clamps, workspace, divergence)
    command_settings   its parameters, defaults, descriptions and checks
    franka_gripper     franka_gripper Grasp/Move actions (only where franka_msgs is installed)
    lifecycle_client   change_state / get_state of a lifecycle node
    messages           header stamps and command messages
    parameters         node parameters whose whole numbers are valid floats
    spinning           an executor spin that survives rclpy's destruction race
"""
from .command_interface import CommandInterface
from .command_settings import CommandSettings, declare_command_parameters, settings_from_node
from .franka_gripper import franka_msgs_available
from .spinning import spin

__all__ = ["CommandInterface", "CommandSettings", "declare_command_parameters", "franka_msgs_available",
           "settings_from_node", "spin"]
