"""Operator input for the teleop node: a raw terminal keyboard and an optional 3Dconnexion SpaceMouse.

Both report, on each ``poll``, a motion in [-1, 1] per axis ``[x, y, z, roll, pitch, yaw]`` (robot
base frame), discrete events (gripper, clutch, speed, recorder keys, quit) and ``lost`` when the
input has gone (terminal closed, device unplugged): the node then stops the robot.

The keyboard reads the controlling terminal in cbreak mode through termios (no X11, so it works
over ssh and inside tmux). Terminals report key presses only, never releases: a motion key counts
as held while it keeps arriving (the terminal's autorepeat), i.e. until ``hold_s`` after its last
press, so releasing a key stops the motion within ``hold_s``.
"""
from __future__ import annotations

import os
import select
import termios
import tty
from dataclasses import dataclass, field

import numpy as np

# key -> (axis, sign)
MOTION_KEYS = {
    "w": (0, +1), "s": (0, -1),  # x forward / back
    "a": (1, +1), "d": (1, -1),  # y left / right
    "r": (2, +1), "f": (2, -1),  # z up / down
    "u": (3, +1), "o": (3, -1),  # roll
    "i": (4, +1), "k": (4, -1),  # pitch
    "j": (5, +1), "l": (5, -1),  # yaw
}
EVENT_KEYS = {
    "g": "toggle_gripper", " ": "toggle_pause", "+": "faster", "=": "faster", "-": "slower",
    "n": "start_episode", "y": "stop_success", "b": "stop_failure", "x": "discard_episode",
    "q": "quit", "h": "help",
}
HELP = """\
keys: w/s +x/-x   a/d +y/-y   r/f +z/-z   u/o roll   i/k pitch   j/l yaw   (hold to move)
      g gripper open/close   space pause/resume (clutch: the robot holds)   +/- speed
      n start episode   y stop: success   b stop: failure   x discard episode   h help   q quit"""


@dataclass
class InputState:
    motion: np.ndarray = field(default_factory=lambda: np.zeros(6))  # each axis in [-1, 1]
    events: list = field(default_factory=list)
    lost: str | None = None  # why the input is gone


class KeyboardInput:
    """Keys from a terminal (or any readable file descriptor: a pipe works too)."""

    def __init__(self, fd: int = 0, hold_s: float = 0.5):
        self.fd, self.hold_s = fd, hold_s
        self._last_press: dict[int, tuple[int, float]] = {}  # axis -> (sign, time)
        self._saved_mode = None
        self._lost: str | None = None
        self._pending = b""
        if os.isatty(fd):
            self._saved_mode = termios.tcgetattr(fd)
            tty.setcbreak(fd)  # one key at a time, no echo; Ctrl-C still interrupts

    def poll(self, now: float) -> InputState:
        state = InputState()
        if self._lost is None:
            for key in self._read_keys():
                if key in MOTION_KEYS:
                    axis, sign = MOTION_KEYS[key]
                    self._last_press[axis] = (sign, now)
                elif key in EVENT_KEYS:
                    state.events.append(EVENT_KEYS[key])
        state.lost = self._lost
        if state.lost is None:
            for axis, (sign, pressed) in self._last_press.items():
                if now - pressed <= self.hold_s:
                    state.motion[axis] = sign
        return state

    def _read_keys(self) -> list[str]:
        keys = []
        while select.select([self.fd], [], [], 0)[0]:
            try:
                data = os.read(self.fd, 1024)
            except OSError as err:  # the terminal went away (EIO after a hangup)
                data, self._lost = b"", f"keyboard input failed: {err}"
            if not data:
                self._lost = self._lost or "keyboard input closed (end of file: the terminal went away)"
                break
            self._pending += data
        text, self._pending = _split_complete_utf8(self._pending)
        skip = 0
        for i, char in enumerate(text):
            if skip:
                skip -= 1
            elif char == "\x1b":  # an escape sequence (arrow keys, ...): not a command
                skip = 2 if text[i + 1:i + 2] == "[" else 0
            else:
                keys.append(char if char in EVENT_KEYS else char.lower())
        return keys

    def close(self) -> None:
        if self._saved_mode is not None:
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved_mode)
            except termios.error:
                pass  # the terminal is gone: nothing left to restore
            self._saved_mode = None


def _split_complete_utf8(data: bytes) -> tuple[str, bytes]:
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            return data[:cut].decode(), data[cut:]
        except UnicodeDecodeError:
            continue
    return data.decode(errors="replace"), b""


class SpaceMouseInput:
    """A 3Dconnexion SpaceMouse through the optional ``pyspacemouse`` package.

    Axes below ``deadband`` (of full deflection) are zero, the rest rescaled to reach 1 at full
    deflection. Left button: gripper open/close; right button: pause/resume.
    """

    def __init__(self, deadband: float = 0.1):
        try:
            import pyspacemouse
        except ImportError:
            raise RuntimeError("input 'spacemouse' needs the optional package pyspacemouse, which is not installed: "
                               "pip install pyspacemouse (it needs the hidapi library: sudo apt install libhidapi-dev), "
                               "or use input:=keyboard") from None
        self._device = pyspacemouse
        if not pyspacemouse.open():
            raise RuntimeError("no SpaceMouse found: is it plugged in, and may this user read it "
                               "(udev rule for /dev/hidraw*)?")
        self.deadband = deadband
        self._buttons = None

    def poll(self, now: float) -> InputState:
        state = InputState()
        try:
            reading = self._device.read()
        except OSError as err:
            state.lost = f"SpaceMouse read failed (unplugged?): {err}"
            return state
        if reading is None:
            state.lost = "SpaceMouse stopped reporting (unplugged?)"
            return state
        # device axes: y forward, x right, z up -> base frame x forward, y left, z up
        raw = np.array([reading.y, -reading.x, reading.z, reading.roll, reading.pitch, -reading.yaw], dtype=float)
        state.motion = apply_deadband(raw, self.deadband)
        buttons = list(reading.buttons)
        if self._buttons is not None:
            for index, event in ((0, "toggle_gripper"), (1, "toggle_pause")):
                if index < len(buttons) and buttons[index] and not self._buttons[index]:
                    state.events.append(event)
        self._buttons = buttons
        return state

    def close(self) -> None:
        self._device.close()


def apply_deadband(values: np.ndarray, deadband: float) -> np.ndarray:
    """Zero inside ``deadband``, linear from 0 at the deadband to 1 at full deflection."""
    values = np.clip(np.asarray(values, dtype=float), -1.0, 1.0)
    magnitude = np.clip((np.abs(values) - deadband) / (1.0 - deadband), 0.0, 1.0)
    return np.sign(values) * magnitude
