"""The sim node in real-time mode (wall-clock pacing and stamps), commanded by target poses as a
franka_ros2 Cartesian impedance controller is."""
import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from scipy.spatial.transform import Rotation
from std_msgs.msg import Float32
from std_srvs.srv import Trigger

from sim_test_helpers import BASE_FRAME, CAMERAS, RunningSim, wait_for
from uwm_ros.sim.ros_interface import pose_stamped

TARGET_TOPIC = "/cartesian_impedance_controller/target_pose"


@pytest.fixture(scope="module")
def sim(ros_context):
    running = RunningSim(ros_context, task="lift", real_time=True)  # default cameras, 96x96, 10 Hz
    yield running
    running.close()


def test_cameras_publish_at_the_control_rate_with_increasing_shared_stamps(sim):
    probe = sim.probe
    probe.clear()
    wait_for(lambda: len(probe.images["wrist"]) >= 20, 30.0, "20 frame sets")
    for camera in CAMERAS:
        frames = probe.snapshot(probe.images[camera])
        stamps = np.array([s for s, _ in frames])
        assert (np.diff(stamps) > 0).all(), f"{camera}: stamps not increasing"
        message = frames[-1][1]
        assert (message.encoding, message.height, message.width) == ("rgb8", 96, 96)
        assert message.header.frame_id == f"{camera}_camera"
    # one frame set: the same stamps on every camera and on the measured pose
    common = set.intersection(*({s for s, _ in probe.snapshot(probe.images[c])} for c in CAMERAS))
    pose_stamps = {p[0] for p in probe.snapshot(probe.poses)}
    assert len(common & pose_stamps) >= 15
    images = probe.frames_at(max(common))
    for camera, rgb in images.items():
        assert rgb.shape == (96, 96, 3) and rgb.std() > 10, f"{camera} image is blank"
    assert not np.array_equal(images["left"], images["right"]) and not np.array_equal(images["left"], images["wrist"])


def test_target_pose_moves_the_hand_by_the_commanded_5cm(sim):
    probe = sim.probe
    _, frame, start, quat = probe.latest(probe.poses)
    assert frame == BASE_FRAME
    goal = start + np.array([0.03, 0.0, -0.04])  # 5 cm forward and down
    publisher = probe.create_publisher(PoseStamped, TARGET_TOPIC, 10)
    try:
        wait_for(lambda: publisher.get_subscription_count() > 0, 10.0, "the sim's target subscription")
        publisher.publish(pose_stamped(goal, quat, BASE_FRAME, probe.get_clock().now().to_msg()))
        wait_for(lambda: np.linalg.norm(probe.latest(probe.poses)[2] - goal) < 0.005, 20.0, "the hand at the target")
        settled = probe.latest(probe.poses)[0]
        wait_for(lambda: probe.latest(probe.poses)[0] >= settled + 5 * 100_000_000, 10.0, "5 more steps")
        _, _, reached, reached_quat = probe.latest(probe.poses)
        assert np.linalg.norm(reached - goal) < 0.01  # the acceptance bound; it is ~2 mm
        assert np.linalg.norm(reached - start) == pytest.approx(0.05, abs=0.01)
        assert (Rotation.from_quat(reached_quat) * Rotation.from_quat(quat).inv()).magnitude() < 0.05
    finally:
        probe.destroy_publisher(publisher)


def test_a_target_in_another_frame_is_ignored(sim):
    probe = sim.probe
    _, _, start, quat = probe.latest(probe.poses)
    publisher = probe.create_publisher(PoseStamped, TARGET_TOPIC, 10)
    try:
        wait_for(lambda: publisher.get_subscription_count() > 0, 10.0, "the sim's target subscription")
        publisher.publish(pose_stamped(start + [0.0, 0.05, 0.0], quat, "world", probe.get_clock().now().to_msg()))
        sent = probe.latest(probe.poses)[0]
        wait_for(lambda: probe.latest(probe.poses)[0] >= sent + 8 * 100_000_000, 10.0, "8 steps")
        # obeyed, the hand would be 5 cm away; ignored, it only settles by millimetres
        assert np.linalg.norm(probe.latest(probe.poses)[2] - start) < 0.015
    finally:
        probe.destroy_publisher(publisher)


def test_gripper_closes_and_opens(sim):
    probe = sim.probe
    publisher = probe.create_publisher(Float32, "/gripper/command", 10)
    try:
        wait_for(lambda: publisher.get_subscription_count() > 0, 10.0, "the sim's gripper subscription")
        publisher.publish(Float32(data=1.0))
        wait_for(lambda: (probe.latest(probe.fingers)[1] < 0.004).all(), 20.0, "both fingers closed")
        publisher.publish(Float32(data=0.0))
        wait_for(lambda: (probe.latest(probe.fingers)[1] > 0.035).all(), 20.0, "both fingers open (~0.037 m)")
    finally:
        probe.destroy_publisher(publisher)


def _reset_with_seed(probe, seed):
    """Set the sim's seed parameter, call ~/reset; the first frames, object poses and response."""
    request = SetParameters.Request(parameters=[ParameterMsg(
        name="seed", value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=seed))])
    assert probe.call(SetParameters, "/uwm_sim/set_parameters", request).results[0].successful
    response = probe.call(Trigger, "/uwm_sim/reset", Trigger.Request())
    assert response.success
    status = wait_for(lambda: next((s for s in probe.snapshot(probe.statuses)
                                    if s["seed"] == seed and s["step"] == 0 and s["episode"] == int(
                                        response.message.split()[-1])), None), 20.0, "the new episode's status")
    stamp = status["stamp_ns"]
    frames = wait_for(lambda: probe.frames_at(stamp), 20.0, "the episode's first frames")
    objects = wait_for(lambda: next((o for s, o in probe.snapshot(probe.objects) if s == stamp), None), 20.0,
                       "the episode's first object poses")
    return response.message, frames, objects


def test_reset_is_deterministic_for_a_seed(sim):
    first_message, first_frames, first_objects = _reset_with_seed(sim.probe, 7)
    assert "seed 7" in first_message
    _, again_frames, again_objects = _reset_with_seed(sim.probe, 7)
    _, other_frames, other_objects = _reset_with_seed(sim.probe, 8)
    for camera in CAMERAS:
        np.testing.assert_array_equal(again_frames[camera], first_frames[camera])
    np.testing.assert_allclose(again_objects[0][0], first_objects[0][0], atol=1e-9)
    np.testing.assert_allclose(again_objects[0][1], first_objects[0][1], atol=1e-9)
    assert np.linalg.norm(other_objects[0][0] - first_objects[0][0]) > 0.001  # another placement
    assert not np.array_equal(other_frames["wrist"], first_frames["wrist"])
    # the cube rests on the table (z = 0 in the base frame) near the table centre
    cube_position = first_objects[0][0]
    assert cube_position[2] == pytest.approx(0.021, abs=0.003)
    assert abs(cube_position[0] - 0.56) < 0.035 and abs(cube_position[1]) < 0.035
