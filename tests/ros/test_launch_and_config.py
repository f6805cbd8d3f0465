"""launch/policy.launch.py, config/policy.yaml and docker/: statically everywhere, and with real
launch_ros where it is installed (the robot's ROS 2 Jazzy; the pip environment has no launch)."""
import ast
import importlib.util
import threading
import time
from pathlib import Path

import pytest
import yaml
from rcl_interfaces.msg import ParameterType
from rclpy.parameter import Parameter

from uwm_ros.policy.node import PolicyNode

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / "launch" / "policy.launch.py"
POLICY_YAML = ROOT / "config" / "policy.yaml"
LAUNCH_ARGUMENTS = {"checkpoint", "params_file", "device", "use_sim", "autostart", "namespace"}


def calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and (getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name)]


def keywords(call):
    return {k.arg: k.value for k in call.keywords}


def literal(tree, node):
    """The value of a constant, or of a module-level NAME = constant."""
    if isinstance(node, ast.Name):
        (value,) = [a.value for a in tree.body if isinstance(a, ast.Assign)
                    and any(getattr(t, "id", None) == node.id for t in a.targets)]
        return literal(tree, value)
    return node.value


def test_launch_file_declares_the_arguments_and_wires_the_lifecycle_node():
    tree = ast.parse(LAUNCH_FILE.read_text(), str(LAUNCH_FILE))
    declared = {c.args[0].value for c in calls(tree, "DeclareLaunchArgument")}
    assert declared == LAUNCH_ARGUMENTS
    used = {c.args[0].value for c in calls(tree, "LaunchConfiguration") if isinstance(c.args[0], ast.Constant)}
    assert used <= declared
    (policy,) = calls(tree, "LifecycleNode")
    kw = keywords(policy)
    assert [literal(tree, kw[k]) for k in ("package", "executable", "name")] == ["uwm_ros", "policy_node", "uwm_policy"]
    assert "namespace" in kw and "parameters" in kw
    # autostart: a ChangeState(configure) event, and ChangeState(activate) once configuring -> inactive
    transitions = {keywords(c)["transition_id"].attr for c in calls(tree, "ChangeState")}
    assert transitions == {"TRANSITION_CONFIGURE", "TRANSITION_ACTIVATE"}
    (handler,) = calls(tree, "OnStateTransition")
    hk = keywords(handler)
    assert (hk["start_state"].value, hk["goal_state"].value) == ("configuring", "inactive")
    # use_sim: the simulated robot by name, with config/sim.yaml
    sim = [c for c in calls(tree, "Node")
           if literal(tree, keywords(c).get("executable", ast.Constant(None))) == "sim_node"]
    assert len(sim) == 1 and literal(tree, keywords(sim[0])["package"]) == "uwm_ros"
    assert ast.unparse(keywords(sim[0])["parameters"]) == "[sim_params_file]"
    assert 'sim_params_file = config_path("sim.yaml")' in LAUNCH_FILE.read_text()
    assert "policy.yaml" in ast.unparse(tree)


def launch_function(name):
    """Run one plain function of the launch file without launch installed: compile its source
    (and the module constants it uses) on its own."""
    tree = ast.parse(LAUNCH_FILE.read_text(), str(LAUNCH_FILE))
    parts = [n for n in tree.body if isinstance(n, ast.Assign) or (isinstance(n, ast.FunctionDef) and n.name == name)]
    namespace = {"yaml": yaml, "os": __import__("os")}
    exec(compile(ast.Module(body=parts, type_ignores=[]), str(LAUNCH_FILE), "exec"), namespace)
    return namespace[name]


def test_use_sim_gives_the_policy_the_simulated_robots_interface(ros):
    shared = launch_function("sim_interface")(str(ROOT / "config" / "sim.yaml"))
    sim = yaml.safe_load((ROOT / "config" / "sim.yaml").read_text())["/**"]["ros__parameters"]
    assert {"camera_topics", "base_frame", "ee_pose_topic", "target_pose_topic", "workspace_min"} <= set(shared)
    assert shared.get("use_sim_time", False) == (not sim.get("real_time", True))
    node = PolicyNode(namespace="/sim_check",
                      parameter_overrides=[Parameter(k, value=v) for k, v in shared.items()])
    try:
        for name, value in shared.items():
            assert node.get_parameter(name).value == value, name  # declared, same type, applied
    finally:
        node.destroy_node()


def test_policy_yaml_sets_only_declared_parameters_with_their_types(ros):
    data = yaml.safe_load(POLICY_YAML.read_text())
    assert list(data) == ["/**"]
    values = data["/**"]["ros__parameters"]
    node = PolicyNode(namespace="/yaml_check")
    try:
        declared = {name: node.get_parameter(name) for name in node._parameters}
        for name, value in values.items():
            assert name in declared, f"{name} in {POLICY_YAML} is not a parameter of uwm_policy"
            assert Parameter.Type.from_parameter_value(value) == declared[name].type_, name
            assert value == declared[name].value, f"{name}: the file documents the defaults"
        described = [n for n in declared if n not in ("use_sim_time", "start_type_description_service")]
        assert set(described) == set(values), "every node parameter is listed in the file"
        for name in described:
            assert node.describe_parameter(name).description, f"{name} has no description"
    finally:
        node.destroy_node()


def test_robot_params_file_sets_declared_parameters(ros):
    """docker/robot.yaml overrides the defaults for the real arm: only known parameters, right types."""
    values = yaml.safe_load((ROOT / "docker" / "robot.yaml").read_text())["/**"]["ros__parameters"]
    node = PolicyNode(namespace="/robot_yaml_check")
    try:
        for name, value in values.items():
            assert node.has_parameter(name), f"{name} in docker/robot.yaml is not a parameter of uwm_policy"
            assert Parameter.Type.from_parameter_value(value) == node.get_parameter(name).type_, name
    finally:
        node.destroy_node()
    controllers = yaml.safe_load((ROOT / "docker" / "controllers.yaml").read_text())["/**"]
    crisp = controllers["cartesian_impedance_controller"]["ros__parameters"]
    assert crisp["base_frame"] == values["base_frame"]  # the controller and the policy share one frame
    assert values["target_pose_topic"] == "/cartesian_impedance_controller/target_pose"


def test_params_file_is_loaded_by_rcl_under_any_namespace(ros, tmp_path):
    data = yaml.safe_load(POLICY_YAML.read_text())
    data["/**"]["ros__parameters"].update(control_rate_hz=15.0, camera_topics=["/a", "/b", "/c"],
                                          command_mode="delta")
    custom = tmp_path / "robot.yaml"
    custom.write_text(yaml.safe_dump(data))
    node = PolicyNode(namespace="/robot_7", cli_args=["--ros-args", "--params-file", str(custom)])
    try:
        assert node.get_parameter("control_rate_hz").value == 15.0
        assert node.get_parameter("camera_topics").value == ["/a", "/b", "/c"]
        assert node.get_parameter("command_mode").value == "delta"
        assert node.get_parameter("camera_topics").type_ == Parameter.Type.STRING_ARRAY
        assert ParameterType.PARAMETER_DOUBLE == node.describe_parameter("max_frame_age_s").type
    finally:
        node.destroy_node()


def test_docker_compose_starts_bringup_controller_cameras_and_policy():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    commands = {name: " ".join(s["command"]) if isinstance(s.get("command"), list) else str(s.get("command", ""))
                for name, s in services.items()}
    assert any("policy.launch.py" in c and "autostart:=" in c and "robot.yaml" in c for c in commands.values())
    assert any("spawner cartesian_impedance_controller" in c for c in commands.values())
    assert any("controllers_yaml:=/opt/uwm_ws/docker/controllers.yaml" in c for c in commands.values())
    assert any(name.startswith("camera") for name in services)
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    base = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert base and all(":" in image and "latest" not in image for image in base)  # pinned bases
    assert "colcon build" in dockerfile and "requirements" in dockerfile


def _launch_available():
    return importlib.util.find_spec("launch") is not None and importlib.util.find_spec("launch_ros") is not None


@pytest.mark.skipif(not _launch_available(),
                    reason="launch and launch_ros are not installed here (ROS 2 Jazzy apt packages; the pip "
                           "environment has no launch); the static test above checks the file")
def test_launch_file_with_launch_ros_configures_and_activates(ros, tiny_checkpoint, tmp_path):
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    from launch import LaunchDescription, LaunchService
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from lifecycle_msgs.srv import GetState

    try:
        get_package_prefix("uwm_ros")
    except PackageNotFoundError:
        pytest.skip("uwm_ros is not installed in an ament index: colcon build and source install/setup.bash")
    namespace = "/launch_check"
    description = LaunchDescription([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={"checkpoint": tiny_checkpoint, "device": "cpu", "autostart": "true",
                          "namespace": namespace, "use_sim": "false"}.items())])
    service = LaunchService(noninteractive=True)
    service.include_launch_description(description)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    import rclpy
    node = rclpy.create_node("launch_checker")
    client = node.create_client(GetState, f"{namespace}/uwm_policy/get_state")
    try:
        deadline, label = time.monotonic() + 120, None
        while time.monotonic() < deadline and label != "active":
            if client.wait_for_service(timeout_sec=1.0):
                future = client.call_async(GetState.Request())
                rclpy.spin_until_future_complete(node, future, timeout_sec=5.0)
                label = future.result().current_state.label if future.result() else None
            time.sleep(0.5)
        assert label == "active"
    finally:
        service.shutdown()
        thread.join(30)
        node.destroy_node()
