"""Launch the simulated Franka `uwm_sim` (and optionally its scripted expert `sim_expert`).

    ros2 launch uwm_ros sim.launch.py
    ros2 launch uwm_ros sim.launch.py task:=stack expert:=true real_time:=false

Arguments:
    params_file  parameters of both nodes (default: share/uwm_ros/config/sim.yaml, node key /**)
    task         lift | stack (overrides the params file when given)
    real_time    true: wall-clock pacing; false: as fast as possible on simulated time (/clock),
                 and the expert then runs with use_sim_time:=true (so must any other consumer)
    expert       also start the scripted expert, commanding the sim through the teleop interface
    namespace    namespace of the launched nodes
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from uwm_ros.launch_helpers import config_path, is_true, large_image_dds_env

PACKAGE = "uwm_ros"


def launch_setup(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    namespace = arg("namespace")
    real_time = is_true(arg("real_time"))
    with_expert = is_true(arg("expert"))
    sim_overrides = {"real_time": real_time}
    if arg("task"):
        sim_overrides["task"] = arg("task")
    if with_expert:  # in command_mode delta the sim follows the expert's ~/delta_ee
        sim_overrides["delta_topic"] = "/" + "/".join(filter(None, [namespace.strip("/"), "sim_expert", "delta_ee"]))
    actions = [Node(package=PACKAGE, executable="sim_node", name="uwm_sim", namespace=namespace,
                    parameters=[arg("params_file"), sim_overrides], output="screen", emulate_tty=True,
                    additional_env=large_image_dds_env())]
    if with_expert:
        actions.append(Node(package=PACKAGE, executable="uwm-sim-expert", name="sim_expert", namespace=namespace,
                            parameters=[arg("params_file"), {"use_sim_time": not real_time}],
                            output="screen", emulate_tty=True))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=config_path("sim.yaml"),
                              description="parameters of uwm_sim and sim_expert (YAML with node key /**)"),
        DeclareLaunchArgument("task", default_value="", description="lift | stack (empty: the params file's)"),
        DeclareLaunchArgument("real_time", default_value="true",
                              description="true: wall-clock pacing; false: fast, simulated time on /clock"),
        DeclareLaunchArgument("expert", default_value="false", description="also start the scripted expert"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the launched nodes"),
        OpaqueFunction(function=launch_setup),
    ])
