"""Launch the UWM policy lifecycle node `uwm_policy` (and the simulated Franka with use_sim:=true).

    ros2 launch uwm_ros policy.launch.py checkpoint:=/data/runs/x/checkpoint autostart:=true
    ros2 launch uwm_ros policy.launch.py checkpoint:=... use_sim:=true autostart:=true

Arguments:
    checkpoint   checkpoint directory (overrides the params file when given)
    params_file  node parameters (default: share/uwm_ros/config/policy.yaml, node key /**)
    device       auto | cpu | cuda | cuda:N (overrides the params file when given)
    use_sim      also start the simulated Franka `uwm_ros sim_node` with config/sim.yaml; the policy
                 then takes the robot interface (topics, frame, workspace box, rate, sim time) from it
    autostart    configure, then activate the node once configured (otherwise: ros2 lifecycle set)
    namespace    namespace of the nodes (parameters still apply: node key /**)
"""
import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from uwm_ros.launch_helpers import config_path, is_true, large_image_dds_env

PACKAGE = "uwm_ros"
# Parameters of config/sim.yaml that describe the simulated robot's interface: the policy uses the same.
SIM_INTERFACE = ("camera_topics", "control_rate_hz", "command_mode", "base_frame", "ee_pose_topic",
                 "target_pose_topic", "gripper_topic", "workspace_min", "workspace_max")


def sim_interface(sim_params_file: str) -> dict:
    """The policy parameters that must match the simulated robot of ``sim_params_file``."""
    with open(sim_params_file) as f:
        params = yaml.safe_load(f)["/**"]["ros__parameters"]
    shared = {name: params[name] for name in SIM_INTERFACE if name in params}
    if not params.get("real_time", True):
        shared["use_sim_time"] = True  # the sim publishes /clock and stamps with simulated time
    return shared


def launch_setup(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    namespace = arg("namespace")
    use_sim = is_true(arg("use_sim"))
    sim_params_file = config_path("sim.yaml")
    overrides = {name: arg(name) for name in ("checkpoint", "device") if arg(name)}
    policy = LifecycleNode(
        package=PACKAGE,
        executable="policy_node",
        name="uwm_policy",
        namespace=namespace,
        parameters=[arg("params_file"), *([sim_interface(sim_params_file)] if use_sim else []), overrides],
        output="screen",
        emulate_tty=True,
        additional_env=large_image_dds_env(),
    )
    actions = [policy]
    if use_sim:
        actions.append(Node(package=PACKAGE, executable="sim_node", name="uwm_sim", namespace=namespace,
                            parameters=[sim_params_file], output="screen", emulate_tty=True,
                            additional_env=large_image_dds_env()))
    if is_true(arg("autostart")):
        activate_when_configured = RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=policy, start_state="configuring", goal_state="inactive",
            entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(policy),
                                                  transition_id=Transition.TRANSITION_ACTIVATE))]))
        configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(policy),
                                                transition_id=Transition.TRANSITION_CONFIGURE))
        actions += [activate_when_configured, configure]
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="checkpoint directory written by uwm-train (overrides params_file)"),
        DeclareLaunchArgument("params_file", default_value=config_path("policy.yaml"),
                              description="parameters of uwm_policy (YAML with node key /**)"),
        DeclareLaunchArgument("device", default_value="",
                              description="auto | cpu | cuda | cuda:N (empty: the params file's)"),
        DeclareLaunchArgument("use_sim", default_value="false",
                              description="also start the simulated Franka (uwm_ros sim_node, config/sim.yaml)"),
        DeclareLaunchArgument("autostart", default_value="false",
                              description="configure and activate uwm_policy after start"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the launched nodes"),
        OpaqueFunction(function=launch_setup),
    ])
