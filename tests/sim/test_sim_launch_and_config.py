"""launch/sim.launch.py and config/sim.yaml: statically everywhere, loaded by rcl into the real
nodes, and run with launch_ros where it is installed (the pip environment has no launch)."""
import ast
import importlib.util
import threading
import time
from pathlib import Path

import pytest
import yaml
from rclpy.parameter import Parameter

from uwm_ros.sim.expert_node import ExpertNode
from uwm_ros.sim.node import PARAMETERS as SIM_PARAMETERS
from uwm_ros.sim.node import SimNode

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / "launch" / "sim.launch.py"
SIM_YAML = ROOT / "config" / "sim.yaml"
LAUNCH_ARGUMENTS = {"params_file", "task", "real_time", "expert", "namespace"}
NOT_IN_FILES = ("use_sim_time", "start_type_description_service",
                # the command interface's franka_gripper action settings: no such actions in the sim
                "gripper_action_ns", "gripper_open_width", "gripper_speed", "gripper_force")


def calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and (getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name)]


def test_launch_file_declares_its_arguments_and_starts_the_sim_and_expert():
    tree = ast.parse(LAUNCH_FILE.read_text(), str(LAUNCH_FILE))
    assert {c.args[0].value for c in calls(tree, "DeclareLaunchArgument")} == LAUNCH_ARGUMENTS
    nodes = {(kw["executable"].value, kw["name"].value) for kw in
             ({k.arg: k.value for k in c.keywords} for c in calls(tree, "Node"))}
    assert nodes == {("sim_node", "uwm_sim"), ("uwm-sim-expert", "sim_expert")}
    assert "sim.yaml" in ast.unparse(tree) and "use_sim_time" in ast.unparse(tree)


def test_sim_yaml_is_loaded_by_both_nodes_with_declared_types(ros_context):
    data = yaml.safe_load(SIM_YAML.read_text())
    assert list(data) == ["/**"]
    values = data["/**"]["ros__parameters"]
    args = ["--ros-args", "--params-file", str(SIM_YAML)]
    sim = SimNode(context=ros_context, cli_args=args, namespace="/yaml_check")
    expert = ExpertNode(context=ros_context, cli_args=args, namespace="/yaml_check")
    try:
        for name, value in values.items():
            node = sim if sim.has_parameter(name) else expert
            assert node.has_parameter(name), f"{name} in {SIM_YAML} is a parameter of neither node"
            assert Parameter.Type.from_parameter_value(value) == node.get_parameter(name).type_, name
            assert node.get_parameter(name).value == value, f"{name} was not loaded"
        for node in (sim, expert):
            names = [n for n in node._parameters if n not in NOT_IN_FILES]
            assert set(names) <= set(values), f"{node.get_name()}: {set(names) - set(values)} missing from sim.yaml"
            for name in names:
                assert node.describe_parameter(name).description, f"{name} has no description"
        for name, (default, _) in SIM_PARAMETERS.items():
            assert values[name] == default, f"{name}: sim.yaml documents the sim node's defaults"
    finally:
        expert.destroy_node()
        sim.close()
        sim.destroy_node()


def _launch_available():
    return importlib.util.find_spec("launch") is not None and importlib.util.find_spec("launch_ros") is not None


@pytest.mark.skipif(not _launch_available(),
                    reason="launch and launch_ros are not installed here (ROS 2 Jazzy apt packages; the pip "
                           "environment has no launch); the static test above checks the file")
def test_launch_file_with_launch_ros_runs_the_expert_to_success(ros):  # the launched nodes' domain
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    from launch import LaunchDescription, LaunchService
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from std_msgs.msg import String

    from uwm_ros.sim.ros_interface import EPISODE_QOS, parse_episode

    try:
        get_package_prefix("uwm_ros")
    except PackageNotFoundError:
        pytest.skip("uwm_ros is not installed in an ament index: colcon build and source install/setup.bash")
    description = LaunchDescription([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={"namespace": "/launch_check", "expert": "true", "real_time": "false"}.items())])
    service = LaunchService(noninteractive=True)
    service.include_launch_description(description)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    import rclpy

    node = rclpy.create_node("sim_launch_checker")
    statuses = []
    node.create_subscription(String, "/launch_check/uwm_sim/episode", lambda m: statuses.append(parse_episode(m)),
                             EPISODE_QOS)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not any(s["success"] for s in statuses):
            rclpy.spin_once(node, timeout_sec=0.5)
        assert any(s["success"] for s in statuses), "the expert did not lift the cube within 180 s"
    finally:
        service.shutdown()
        thread.join(30)
        node.destroy_node()
