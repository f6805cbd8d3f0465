"""Record teleoperated demonstrations: the episode recorder, and the teleop node in its own terminal.

    ros2 launch uwm_ros teleop_record.launch.py output_dir:=data/bags task:="pick the cube"
    ros2 launch uwm_ros teleop_record.launch.py use_sim:=true       # rehearse on the simulated Franka

`ros2 launch` gives its processes no keyboard, so the teleop node runs in a terminal window of its
own (``teleop_prefix``, default ``xterm -e``). Over ssh, or to keep the keys in your own shell, use
``launch_teleop:=false`` and run the teleop node by hand in another terminal:

    ros2 run uwm_teleop teleop_node --ros-args --params-file config/teleop.yaml -p task:="pick the cube"

Arguments:
    output_dir        where the episode bags go (overrides recorder_params)
    task              task of the episodes (given to the teleop node, which sets the recorder's task)
    recorder_params   recorder parameters (default: share/uwm_ros/config/recorder.yaml, node key /**)
    teleop_params     teleop parameters (default: share/uwm_ros/config/teleop.yaml, node key /**)
    launch_teleop     start the teleop node here (true) or not (false: run it by hand)
    teleop_prefix     terminal that hosts the teleop node's keyboard (e.g. "xterm -e", "gnome-terminal --")
    input             keyboard | spacemouse
    use_sim           also start the simulated Franka (uwm_ros sim_node with config/sim.yaml)
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from uwm_ros.launch_helpers import config_path, is_true, large_image_dds_env


def launch_setup(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    recorder_overrides = {"output_dir": arg("output_dir")} if arg("output_dir") else {}
    # no emulate_tty for the recorder: launch prints whole lines only, so it logs plain status lines
    actions = [Node(package="uwm_teleop", executable="recorder_node", name="recorder",
                    parameters=[arg("recorder_params"), recorder_overrides], output="screen",
                    additional_env=large_image_dds_env())]
    if is_true(arg("launch_teleop")):
        teleop_overrides = {"input": arg("input")}
        if arg("task"):
            teleop_overrides["task"] = arg("task")
        actions.append(Node(package="uwm_teleop", executable="teleop_node", name="teleop",
                            parameters=[arg("teleop_params"), teleop_overrides], prefix=arg("teleop_prefix"),
                            output="screen"))
    if is_true(arg("use_sim")):
        actions.append(Node(package="uwm_ros", executable="sim_node", name="uwm_sim",
                            parameters=[config_path("sim.yaml")], output="screen", emulate_tty=True,
                            additional_env=large_image_dds_env()))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("output_dir", default_value="", description="episode bag directory (empty: the "
                              "recorder params file's)"),
        DeclareLaunchArgument("task", default_value="", description="task description of the episodes"),
        DeclareLaunchArgument("recorder_params", default_value=config_path("recorder.yaml"),
                              description="recorder parameters (YAML with node key /**)"),
        DeclareLaunchArgument("teleop_params", default_value=config_path("teleop.yaml"),
                              description="teleop parameters (YAML with node key /**)"),
        DeclareLaunchArgument("launch_teleop", default_value="true",
                              description="start the teleop node in its own terminal (false: run it by hand)"),
        DeclareLaunchArgument("teleop_prefix", default_value="xterm -e",
                              description="terminal emulator command that hosts the teleop keyboard"),
        DeclareLaunchArgument("input", default_value="keyboard", description="keyboard | spacemouse"),
        DeclareLaunchArgument("use_sim", default_value="false", description="also start the simulated Franka"),
        OpaqueFunction(function=launch_setup),
    ])
