"""uwm-teleop (``ros2 run uwm_teleop teleop_node``): drive the robot from a keyboard or SpaceMouse.

Each control tick turns the operator's input into one action ``[dx, dy, dz, rx, ry, rz, g]``
(speed x period, base frame, gripper absolute) and sends it through the same
``CommandInterface`` as the policy node: ``~/delta_ee``, the target pose integrated onto the last
target (seeded from the measured pose), and the gripper. Only one commander may publish the target:
while another node does, the interface holds.

Safety: the clutch (space) pauses and the robot holds; when the input disappears (terminal
closed, SpaceMouse unplugged) the robot holds and the node exits. The recorder keys call the
recorder's services (``~/start`` after setting its ``task`` parameter, ``~/stop``, ``~/discard``);
its status line is shown below ours.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import rclpy
from rcl_interfaces.msg import Parameter, ParameterDescriptor, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from uwm_core.stop_request import StopRequest
from uwm_ros.robot import CommandInterface, declare_command_parameters
from uwm_teleop.teleop_input import HELP, InputState, KeyboardInput, SpaceMouseInput

SPEED_STEP = 1.25
SPEED_SCALE_RANGE = (0.1, 1.0)
INPUTS = ("keyboard", "spacemouse")

PARAMETERS = {  # name: (default, description)
    "input": ("keyboard", "keyboard (this terminal, works over ssh/tmux) or spacemouse (needs pyspacemouse; the "
              "keyboard still gives the gripper, clutch and recorder keys)"),
    "control_rate_hz": (10.0, "command rate: one action per tick (the dataset's fps)"),
    "max_linear_speed": (0.1, "translation speed at full input and speed scale 1 (m/s)"),
    "max_angular_speed": (0.5, "rotation speed at full input and speed scale 1 (rad/s)"),
    "speed_scale": (0.5, "initial speed scale (0.1..1), changed with +/-"),
    "deadband": (0.1, "SpaceMouse deflection (fraction of full) below which an axis is zero"),
    "key_hold_s": (0.5, "a motion key counts as held until this long after its last (auto-repeated) press"),
    "start_paused": (False, "start with the clutch open (no motion until space)"),
    "recorder_node": ("/recorder", "the recorder node whose services the episode keys call"),
    "task": ("", "task description sent to the recorder's task parameter when an episode starts"),
}


class TeleopNode(Node):
    def __init__(self, input_fd: int = 0, **kwargs):
        super().__init__("teleop", **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        declare_command_parameters(self)
        param = lambda name: self.get_parameter(name).value  # noqa: E731
        kind = param("input")
        if kind not in INPUTS:
            raise ValueError(f"parameter input={kind!r} is not one of {list(INPUTS)}")
        rate = float(param("control_rate_hz"))
        if not rate > 0:
            raise ValueError(f"parameter control_rate_hz={rate} must be positive")
        self.period = 1.0 / rate
        self.linear_speed, self.angular_speed = float(param("max_linear_speed")), float(param("max_angular_speed"))
        self.speed_scale = float(np.clip(param("speed_scale"), *SPEED_SCALE_RANGE))
        self.paused = bool(param("start_paused"))
        self.gripper = 0.0
        self.task = str(param("task"))

        self.spacemouse = SpaceMouseInput(float(param("deadband"))) if kind == "spacemouse" else None
        self.out = CommandInterface(self)
        self.keyboard = KeyboardInput(input_fd, hold_s=float(param("key_hold_s")))  # last: it changes the tty

        recorder = param("recorder_node").rstrip("/")
        self.recorder_clients = {
            "start": self.create_client(Trigger, f"{recorder}/start"),
            "stop": self.create_client(SetBool, f"{recorder}/stop"),
            "discard": self.create_client(Trigger, f"{recorder}/discard"),
        }
        self.recorder_params = self.create_client(SetParameters, f"{recorder}/set_parameters")
        self.create_subscription(String, f"{recorder}/status", self._on_recorder_status, 10)
        self.recorder_status = "recorder: no status yet"
        self.last_message = ""
        self.lost: str | None = None
        self.quit = False
        self.tty = sys.stdout.isatty()
        self.create_timer(self.period, self._tick)
        self._say(HELP)

    # ------------------------------------------------------------------ control
    def _tick(self) -> None:
        if self.lost or self.quit:
            return
        now = time.monotonic()
        state = self.keyboard.poll(now) if self.keyboard is not None else InputState()
        motion = state.motion
        if self.spacemouse is not None:
            if state.lost:  # with a SpaceMouse the keys are extras (e.g. no terminal under ros2 launch)
                self.get_logger().warning(f"{state.lost}: keys disabled, the SpaceMouse still drives")
                self.keyboard.close()
                self.keyboard, state.lost = None, None
            mouse = self.spacemouse.poll(now)
            state.events += mouse.events
            state.lost = mouse.lost
            motion = mouse.motion
        for event in state.events:
            self._handle(event)
        if state.lost:
            self.lost = state.lost
            self.out.hold(f"input lost: {state.lost}")
            self.get_logger().error(f"{state.lost}: the robot holds its target; teleop stops")
            return
        if self.quit:
            self.out.hold("teleop quit")
            return
        if self.paused:
            self.out.hold("paused (clutch)")
        else:
            scale = self.speed_scale * self.period
            delta = np.concatenate([motion[:3] * self.linear_speed, motion[3:] * self.angular_speed]) * scale
            self.out.send(np.append(delta, self.gripper))
        self._show_status()

    def _handle(self, event: str) -> None:
        if event == "toggle_gripper":
            self.gripper = 1.0 - self.gripper
        elif event == "toggle_pause":
            self.paused = not self.paused
        elif event in ("faster", "slower"):
            factor = SPEED_STEP if event == "faster" else 1 / SPEED_STEP
            self.speed_scale = float(np.clip(self.speed_scale * factor, *SPEED_SCALE_RANGE))
        elif event == "start_episode":
            self._start_episode()
        elif event in ("stop_success", "stop_failure"):
            self._call("stop", SetBool.Request(data=event == "stop_success"))
        elif event == "discard_episode":
            self._call("discard", Trigger.Request())
        elif event == "quit":
            self.quit = True
        elif event == "help":
            self._say(HELP)

    # ------------------------------------------------------------------ recorder
    def _start_episode(self) -> None:
        if not self.task:
            self._call("start", Trigger.Request())
            return
        if not self.recorder_params.service_is_ready():
            self._say(f"recorder unavailable: {self.recorder_params.srv_name} has no server")
            return
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=self.task)
        future = self.recorder_params.call_async(SetParameters.Request(parameters=[Parameter(name="task", value=value)]))
        future.add_done_callback(lambda _f: self._call("start", Trigger.Request()))

    def _call(self, name: str, request) -> None:
        client = self.recorder_clients[name]
        if not client.service_is_ready():
            self._say(f"recorder unavailable: {client.srv_name} has no server")
            return
        client.call_async(request).add_done_callback(
            lambda future: self._say(f"recorder {name}: {future.result().message}"))

    def _on_recorder_status(self, msg: String) -> None:
        self.recorder_status = msg.data

    # ------------------------------------------------------------------ terminal
    def _say(self, text: str) -> None:
        self.last_message = text.splitlines()[-1]
        print(("\r\033[K" if self.tty else "") + text, flush=True)

    def _show_status(self) -> None:
        if not self.tty:
            return
        state = "PAUSED" if self.paused else ("HOLD: " + self.out.hold_reason if self.out.is_holding else "live")
        line = (f"[teleop] {state} | speed {self.speed_scale:.2f} | gripper {'closed' if self.gripper else 'open'}"
                f" | {self.recorder_status}")
        print(f"\r\033[K{line[:200]}", end="", flush=True)

    def close(self) -> None:
        if self.keyboard is not None:
            self.keyboard.close()
        if self.spacemouse is not None:
            self.spacemouse.close()


def main(args=None) -> int:
    # Ctrl-C / SIGTERM only end the loop below (StopRequest): a KeyboardInterrupt raised inside a
    # callback could leave the command interface's lock taken and the closing hold waiting for it.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = StopRequest()
    node = None
    status = 0
    try:
        node = TeleopNode()
        while rclpy.ok() and not (stop.requested or node.lost or node.quit):
            rclpy.spin_once(node, timeout_sec=0.1)
        status = 1 if node.lost else 0
        # let the last hold and pending service responses go out before leaving
        deadline = time.monotonic() + 0.5
        while rclpy.ok() and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, RuntimeError) as err:
        print(f"uwm-teleop: {err}", file=sys.stderr)
        status = 2
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
        stop.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
