"""Pure parts: step alignment rules, keyboard input through a real pseudo-terminal, deadband,
the SpaceMouse message when pyspacemouse is missing."""
from __future__ import annotations

import ast
import importlib.util
import os
import pty
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import yaml
from rclpy.parameter import Parameter

from uwm_core.data import alignment
from uwm_core.data.alignment import AlignmentError
from uwm_core.spatial import apply_delta, delta_between
from uwm_ros.robot.command_settings import CommandSettings
from uwm_teleop import recorder, teleop_node
from uwm_teleop.teleop_input import KeyboardInput, apply_deadband

MS = 1_000_000


def test_compose_deltas_is_sequential_application():
    rng = np.random.default_rng(0)
    deltas = np.concatenate([rng.normal(0, 0.01, (5, 3)), rng.normal(0, 0.3, (5, 3))], axis=1)
    position, quat = np.array([0.4, 0.1, 0.2]), np.array([0.0, 0.0, 0.3826834, 0.9238795])
    end_position, end_quat = position, quat
    for delta in deltas:
        end_position, end_quat = apply_delta(end_position, end_quat, delta)
    composed = alignment.compose_deltas(deltas)
    # composing then applying from the origin pose equals the motion between the poses
    np.testing.assert_allclose(composed[:3], end_position - position, atol=1e-12)
    np.testing.assert_allclose(delta_between(position, quat, *apply_delta(position, quat, composed)),
                               delta_between(position, quat, end_position, end_quat), atol=1e-9)


def test_command_steps_one_per_command_faster_composed_slower_refused():
    stamps = np.array([0, 98, 203, 300, 401]) * MS  # ~10 Hz with jitter
    times, ends, step_of = alignment.command_steps(stamps, 100 * MS)
    np.testing.assert_array_equal(times, stamps)
    np.testing.assert_array_equal(step_of, np.arange(5))
    np.testing.assert_array_equal(ends, [98 * MS, 198 * MS, 300 * MS, 400 * MS, 501 * MS])  # never past t + dt

    fast = np.arange(12) * 25 * MS + 7 * MS  # 40 Hz: four commands per step
    times, ends, step_of = alignment.command_steps(fast, 100 * MS)
    np.testing.assert_array_equal(step_of, np.repeat(np.arange(3), 4))
    np.testing.assert_array_equal(times, fast[[0, 4, 8]])
    with pytest.raises(AlignmentError, match="slower than the control rate"):
        alignment.command_steps(np.arange(5) * 250 * MS, 100 * MS)


def test_frames_for_steps_latest_at_or_before_within_gap():
    frames = np.array([0, 40, 80, 200]) * MS
    steps = np.array([-10, 0, 39, 40, 150, 195, 260, 400]) * MS
    index, usable = alignment.frames_for_steps(steps, frames, max_gap=100 * MS)
    np.testing.assert_array_equal(index, [-1, 0, 0, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(usable, [False, True, True, True, True, False, True, False])
    index, usable = alignment.frames_for_steps(steps, np.array([], dtype=np.int64), max_gap=100 * MS)
    assert not usable.any()


def test_gripper_per_step_is_the_command_in_force_before_the_step_end():
    ends = np.array([100, 200, 300, 400]) * MS
    values = alignment.gripper_per_step(ends, np.array([50, 150, 300]) * MS, np.array([0.0, 1.0, 0.0]), 0.5)
    np.testing.assert_array_equal(values, [0.0, 1.0, 1.0, 0.0])  # 300 ms belongs to the step ending at 400
    np.testing.assert_array_equal(alignment.gripper_per_step(ends, [], [], 0.25), [0.25] * 4)


def test_keyboard_from_a_pty_holds_keys_reports_events_and_loss():
    master, slave = pty.openpty()
    keyboard = KeyboardInput(slave, hold_s=0.5)
    try:
        os.write(master, b"w\x1b[Aj g n")  # an arrow key's escape sequence is ignored
        state = keyboard.poll(now=10.0)
        np.testing.assert_array_equal(state.motion, [1, 0, 0, 0, 0, 1])
        assert state.events == ["toggle_pause", "toggle_gripper", "toggle_pause", "start_episode"]
        assert keyboard.poll(now=10.4).motion[0] == 1  # still held (autorepeat gap)
        os.write(master, b"S")
        assert keyboard.poll(now=10.45).motion[0] == -1  # the latest key of an axis wins, any case
        assert not keyboard.poll(now=11.0).motion.any()  # released: stops within hold_s
        os.close(master)
        state = keyboard.poll(now=11.1)
        assert state.lost and "terminal" in state.lost and not state.motion.any()
    finally:
        keyboard.close()
        os.close(slave)


def test_deadband():
    np.testing.assert_allclose(apply_deadband([0.05, -0.1, 0.55, -1.0, 2.0, 0.0], 0.1),
                               [0.0, 0.0, 0.5, -1.0, 1.0, 0.0])


@pytest.mark.skipif(importlib.util.find_spec("pyspacemouse") is not None, reason="pyspacemouse is installed here")
def test_spacemouse_without_pyspacemouse_says_how_to_install(ros):
    with pytest.raises(RuntimeError, match="pip install pyspacemouse"):
        teleop_node.TeleopNode(parameter_overrides=[Parameter("input", value="spacemouse")])


ROOT = Path(__file__).resolve().parents[2]


def test_params_files_set_only_declared_parameters_and_launch_file_parses():
    teleop = yaml.safe_load((ROOT / "config" / "teleop.yaml").read_text())["/**"]["ros__parameters"]
    assert set(teleop) == set(teleop_node.PARAMETERS) | {f.name for f in fields(CommandSettings)}
    recorder_params = yaml.safe_load((ROOT / "config" / "recorder.yaml").read_text())["/**"]["ros__parameters"]
    assert set(recorder_params) == set(recorder.PARAMETERS)
    assert {k: v for k, (v, _) in recorder.PARAMETERS.items()} == recorder_params  # file = declared defaults
    source = (ROOT / "launch" / "teleop_record.launch.py").read_text()
    functions = {node.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None, reason="launch_ros is not installed here")
def test_launch_description_builds():
    spec = importlib.util.spec_from_file_location("teleop_record_launch", ROOT / "launch" / "teleop_record.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = {a.name for a in module.generate_launch_description().entities if hasattr(a, "name")}
    assert {"output_dir", "task", "launch_teleop", "input", "use_sim"} <= names
