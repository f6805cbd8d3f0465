"""Bad sim configuration: one clear message listing the valid choices."""
import subprocess
import sys

import pytest
from rclpy.parameter import Parameter

from uwm_ros.sim.franka_env import SimFranka
from uwm_ros.sim.rendering import INSTALL_HINTS, RenderingUnavailable, check_rendering
from uwm_ros.sim.tasks import get_task
from uwm_ros.sim.node import SimNode


def test_unknown_task_lists_the_valid_tasks(ros_context):
    with pytest.raises(ValueError, match=r"unknown sim task 'juggle'; valid tasks: lift, stack"):
        SimNode(context=ros_context, parameter_overrides=[Parameter("task", value="juggle")])
    with pytest.raises(ValueError, match="valid tasks: lift, stack"):
        get_task("Lift")


def test_unknown_camera_lists_the_cameras_the_scene_can_render():
    with pytest.raises(ValueError) as error:
        SimFranka("lift", cameras={"left": "scene_left", "top": "ceiling_cam"})
    message = str(error.value)
    assert "camera 'top' maps to 'ceiling_cam'" in message
    for camera in ("scene_left", "scene_right", "robot0_eye_in_hand", "agentview", "sideview", "frontview"):
        assert camera in message


def test_mismatched_camera_lists_and_bad_rates_are_refused(ros_context):
    with pytest.raises(ValueError, match="one entry per camera"):
        SimNode(context=ros_context, parameter_overrides=[Parameter("cameras", value=["left", "right"])])
    with pytest.raises(ValueError, match="control_rate_hz=7.0 must divide the 500 Hz physics rate"):
        SimFranka("lift", cameras={}, control_rate_hz=7.0)


def test_scene_cameras_are_configurable_and_checked(ros_context):
    with pytest.raises(ValueError, match=r"scene camera 'scene_left': \[0.5, 0.0, 0.3, 0.5, 0.0, 0.1\] looks straight"):
        SimFranka("lift", cameras={}, scene_cameras={"scene_left": [0.5, 0.0, 0.3, 0.5, 0.0, 0.1]})
    with pytest.raises(ValueError, match=r"scene camera 'scene_right': \[1.0, 2.0\] must be \[x, y, z"):
        SimNode(context=ros_context, parameter_overrides=[Parameter("scene_right_camera", value=[1.0, 2.0])])
    with pytest.raises(ValueError, match="field of view 200.0 deg must be in 1..170"):
        SimFranka("lift", cameras={}, scene_camera_fovy_deg=200.0)


def test_the_configured_scene_cameras_show_the_cube_at_the_demo_training_size():
    """At 32 px (the demo's training images) the red cube covers pixels of every view."""
    from uwm_core.processing import float_to_frames, frames_to_float, resize_images

    sim = SimFranka("lift", width=96, height=96)
    try:
        for seed in (3, 4, 5):
            sim.reset(seed)
            for camera, frame in sim.render().items():
                small = float_to_frames(resize_images(frames_to_float(frame), (32, 32))).astype(int)
                red, green, blue = small[..., 0], small[..., 1], small[..., 2]
                cube = (red > 90) & (red > 1.6 * green) & (red > 1.6 * blue)
                assert cube.sum() >= 4, (seed, camera, int(cube.sum()))
    finally:
        sim.close()


def test_rendering_check_names_the_package_to_install(monkeypatch):
    assert check_rendering() in ("osmesa", "egl")  # the configured backend renders here
    # OSMesa needs PyOpenGL on its OSMesa platform: a conflicting one makes the backend unusable
    monkeypatch.setenv("PYOPENGL_PLATFORM", "egl")
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    result = subprocess.run([sys.executable, "-c", "from uwm_ros.sim.rendering import check_rendering; "
                             "check_rendering()"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert RenderingUnavailable.__name__ in result.stderr and INSTALL_HINTS["osmesa"] in result.stderr
