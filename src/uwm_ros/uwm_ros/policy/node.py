"""``uwm_policy``: a UWM checkpoint as a closed-loop policy, as an rclpy lifecycle node.

    uwm-policy-node --ros-args -p checkpoint:=runs/x/checkpoint -p autostart:=true
    ros2 launch uwm_ros policy.launch.py checkpoint:=runs/x/checkpoint autostart:=true

Lifecycle: configure loads the checkpoint, checks the camera topics against its cameras, runs one
warm-up inference and creates the subscriptions and publishers; activate starts the control timer;
deactivate holds the current target; cleanup/shutdown free the model. A fault while active
(non-finite actions, a failing model) stops the robot and goes through the ERROR transition.

Cameras (``camera_topics``, ordered like the checkpoint's cameras): a topic ending in
``/compressed`` is subscribed as sensor_msgs/CompressedImage (jpeg/png), any other as
sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8; row padding in ``step`` honoured), all with
sensor-data QoS. The observation is ``obs_horizon`` frame sets one control period apart whose
header stamps agree within ``max_frame_skew_s`` and are not older than ``max_frame_age_s``
(``camera_sync``). Control at ``control_rate_hz`` executes the first ``execute_steps`` actions of
each chunk and replans; inference runs on its own thread and late actions are skipped
(``chunk_scheduler``). Commands go out through ``uwm_ros.robot``'s CommandInterface (``~/delta_ee``,
target pose or deltas, gripper), with its clamps, workspace box and pose checks.

Parameters are read at configure: to change them, cleanup and configure again. Cleanup returns at
once (an inference still running finishes on its thread, and its model is freed when it ends);
shutdown waits for it, so the process exits cleanly.

Introspection: ``~/status`` (std_msgs/String, JSON), ``/diagnostics`` (inference latency, frame
age and skew, tick period, state) and, when ``publish_predicted_frames`` is true, ``~/predicted_frames``
(sensor_msgs/Image): a grid with one column per camera, the current frame on top and below it the
world model's forward-dynamics prediction of the frames after the executing chunk.
"""
from __future__ import annotations

import gc
import json
import sys
import threading

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from uwm_core import WorldModel
from uwm_core.stop_request import StopRequest
from uwm_ros.policy.camera_sync import CameraBuffers
from uwm_ros.policy.configuration import (POLICY_PARAMETERS, ConfigureError, check_checkpoint, check_parameters,
                                          inference_options, warm_up)
from uwm_ros.policy.control import ControlLoop
from uwm_ros.policy.inference_worker import InferenceJob, InferenceWorker, LatestJobThread, decode_observation
from uwm_ros.policy.status import diagnostics, prediction_grid
from uwm_ros.robot import CommandInterface, declare_command_parameters, settings_from_node, spin
from uwm_ros.robot.parameters import declare_parameters, parameter_value

NODE_NAME = "uwm_policy"
COMPRESSED_SUFFIX = "/compressed"
# The inference thread runs Python between torch ops; at the default 5 ms GIL switch interval every
# GIL hand-back in a control tick (each publish, each log line) can wait that long, and a tick
# stretches to a second on a busy 2-core machine. 0.5 ms keeps ticks on time for a little overhead.
GIL_SWITCH_INTERVAL_S = 0.0005
SIGNAL_CHECK_PERIOD_S = 0.2  # the longest a SIGINT/SIGTERM waits to be seen, in every lifecycle state
SHUTDOWN_JOIN_S = 300.0  # shutdown waits this long for a running inference (a paper-size chunk on a CPU)


class PolicyNode(LifecycleNode):
    def __init__(self, load_world_model=None, **kwargs):
        """``load_world_model(path, device, precision, compile)`` builds the model (default
        ``WorldModel.from_checkpoint``)."""
        super().__init__(NODE_NAME, **kwargs)
        declare_parameters(self, POLICY_PARAMETERS)
        declare_command_parameters(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._load_world_model = load_world_model
        self._state_label = "unconfigured"
        self._io_group = ReentrantCallbackGroup()
        self._retired_threads = []  # stopped inference threads that may still finish a chunk
        # the status timer and the preview thread run beside the lifecycle transitions that destroy
        # their publishers: both sides take this lock, so nothing publishes on a destroyed publisher
        self._publishers_lock = threading.Lock()
        self._reset_resources()
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))  # process-wide

    # ------------------------------------------------------------------ lifecycle
    def _reset_resources(self) -> None:
        self._wm = None
        self._cmd = None
        self._control: ControlLoop | None = None
        self._camera_subs = []
        self._worker = None
        self._preview = None
        self._tick_timer = None
        self._status_timer = None
        self._status_pub = self._diag_pub = self._preview_pub = None

    @property
    def _fault(self) -> str | None:
        return None if self._control is None else self._control.fault

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Every parameter but use_sim_time is read at configure: a change while configured would be
        accepted and silently ignored, so it is refused with the way to apply it."""
        if self._state_label in ("inactive", "active"):
            read_at_configure = [param.name for param in params if param.name != "use_sim_time"]
            if read_at_configure:
                return SetParametersResult(successful=False, reason=(
                    f"{', '.join(read_at_configure)}: read at configure, the node is {self._state_label}; deactivate "
                    f"and clean up, set them, then configure again"))
        return SetParametersResult(successful=True)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # every failure: one line naming the value, nothing left behind
            self.get_logger().error(f"configure failed: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self._state_label = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        try:
            p = {name: parameter_value(self, name, default) for name, (default, _) in POLICY_PARAMETERS.items()}
        except ValueError as err:
            raise ConfigureError(str(err)) from None
        self._params = p
        command_settings = settings_from_node(self)  # ValueError names the parameter
        check_parameters(p, command_settings)
        device, precision, compile_step = inference_options(p)
        if p["torch_threads"] > 0:
            torch.set_num_threads(p["torch_threads"])
        self.get_logger().info(f"loading checkpoint {p['checkpoint']} on {device}, precision {precision}"
                               + (" (auto)" if p["precision"] == "auto" else ""))
        wm = (self._load_world_model or WorldModel.from_checkpoint)(p["checkpoint"], device, precision, compile_step)
        if compile_step:
            log = self.get_logger().info if wm.compile_status.startswith("compiled") else self.get_logger().warning
            log(f"denoiser step: {wm.compile_status}")
        self._execute_steps = check_checkpoint(wm, p)
        self._wm = wm
        self._period_s = 1.0 / p["control_rate_hz"]
        self._cameras = wm.cameras
        self._topics = dict(zip(self._cameras, p["camera_topics"]))
        warmup_latency_s = warm_up(wm, p["checkpoint"])
        self.get_logger().info(
            f"checkpoint {p['checkpoint']}: cameras {self._cameras} <- {list(p['camera_topics'])}, obs_horizon "
            f"{wm.obs_horizon}, action_horizon {wm.action_horizon}, execute_steps {self._execute_steps}, warm-up "
            f"inference {warmup_latency_s:.3f} s")

        self._cmd = CommandInterface(self, command_settings, callback_group=self._io_group)
        keep_s = (wm.obs_horizon - 1) * self._period_s + p["max_frame_age_s"] + p["max_frame_skew_s"] + 0.25
        buffers = CameraBuffers(self._cameras, keep_s, command_settings.max_future_stamp_s)
        self._worker = InferenceWorker(self._make_predict(wm, p["seed"]),
                                       lambda obs: decode_observation(obs, self._cameras, self._topics), self._now_s)
        if p["publish_predicted_frames"]:
            self._preview_pub = self.create_publisher(Image, "~/predicted_frames", 1)
            self._preview = LatestJobThread(lambda job, wm=wm: self._publish_prediction(wm, *job),
                                            p["predicted_frames_period_s"],
                                            lambda text: self.get_logger().warning(text, throttle_duration_sec=10.0))
        self._control = ControlLoop(self, wm, self._cmd, buffers, self._worker, self._preview, p, self._topics,
                                    self._execute_steps, warmup_latency_s)
        on_frame = self._control.on_frame  # bound now: a frame callback may still run after cleanup
        for cam, topic in self._topics.items():
            msg_type = CompressedImage if topic.rstrip("/").endswith(COMPRESSED_SUFFIX) else Image
            self._camera_subs.append(self.create_subscription(
                msg_type, topic, lambda msg, cam=cam: on_frame(cam, msg), qos_profile_sensor_data,
                callback_group=self._io_group))
        self._status_pub = self.create_publisher(String, "~/status", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._status_timer = self.create_timer(p["status_period_s"], self._publish_status,
                                               callback_group=MutuallyExclusiveCallbackGroup())

    @staticmethod
    def _make_predict(wm, seed: int):
        def predict(images: dict, job: InferenceJob) -> np.ndarray:
            return wm.predict_actions(images, seed=None if seed < 0 else seed + job.job_id, state=job.state)
        return predict

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._control.start()
        self._tick_timer = self.create_timer(self._period_s, self._on_tick)
        self._state_label = "active"
        self.get_logger().info(f"active: control at {1 / self._period_s:g} Hz, executing {self._execute_steps} "
                               f"actions per chunk")
        self._publish_status()
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_control("deactivated")
        self._state_label = "inactive"
        self._publish_status()
        if self._fault is not None:
            return TransitionCallbackReturn.ERROR  # -> on_error
        self.get_logger().info("inactive: holding the current target")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._state_label = "cleaningup"
        self._release()
        self.get_logger().info("cleaned up: model freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_control("shutting down")
        self._state_label = "shuttingdown"
        self._release()
        for thread in self._retired_threads:  # the process may exit next: no inference left running
            thread.stop(SHUTDOWN_JOIN_S)
        self._retired_threads.clear()
        self._state_label = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error processing: {self._fault or 'transition failed'}; robot held, model freed, "
                                f"node unconfigured (configure again to retry)")
        self._stop_control("error")
        self._state_label = "errorprocessing"
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_control(self, reason: str) -> None:
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self.destroy_timer(self._tick_timer)
            self._tick_timer = None
        if self._control is not None:
            self._control.stop(reason)

    def _release(self) -> None:
        """Free everything configure created (also after a failed configure)."""
        for thread in (self._worker, self._preview):
            if thread is not None:
                thread.stop(0.5)  # a running inference ends on its own; its result is dropped
                self._retired_threads = [t for t in self._retired_threads if t.alive] + [thread]
        if self._status_timer is not None:
            self._status_timer.cancel()
            self.destroy_timer(self._status_timer)
        for sub in self._camera_subs:
            self.destroy_subscription(sub)
        with self._publishers_lock:
            if self._status_pub is not None:  # the last word before the publishers go: state and fault
                self._publish_status_now()
            for pub in (self._status_pub, self._diag_pub, self._preview_pub):
                if pub is not None:
                    self.destroy_publisher(pub)
            self._status_pub = self._diag_pub = self._preview_pub = None
        if self._cmd is not None:
            self._cmd.destroy()
        had_model = self._wm is not None
        self._reset_resources()
        self._state_label = "unconfigured"
        if had_model:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_tick(self) -> None:
        self._control.tick()
        if self._fault is not None:
            self._enter_error()

    def _enter_error(self) -> None:
        self.get_logger().error(f"FAULT: {self._fault}; stopping the robot")
        self._cmd.hold(f"fault: {self._fault}")
        self.trigger_deactivate()  # on_deactivate returns ERROR -> on_error

    # ------------------------------------------------------------------ introspection
    def _publish_prediction(self, wm, images: dict, actions: np.ndarray, stamp_s: float, chunk_id: int,
                            state: np.ndarray | None) -> None:
        seed = self._params["seed"]
        predicted = wm.predict_next_frames(images, actions, seed=None if seed < 0 else seed + chunk_id, state=state)
        msg = prediction_grid(wm, images, predicted, self._cameras, Time(nanoseconds=int(stamp_s * 1e9)).to_msg(),
                              chunk_id)
        with self._publishers_lock:
            if self._preview_pub is not None:
                self._preview_pub.publish(msg)

    def status(self) -> dict:
        """The node's state as a JSON-friendly dict (published on ~/status)."""
        control = {"holding": False, "hold_reason": None} if self._control is None else self._control.status()
        return {"state": self._state_label, "fault": self._fault, **control}

    def _publish_status(self) -> None:
        with self._publishers_lock:
            if self._status_pub is not None:
                self._publish_status_now()

    def _publish_status_now(self) -> None:
        status = self.status()
        self._status_pub.publish(String(data=json.dumps(status)))
        self._diag_pub.publish(diagnostics(status, self.get_fully_qualified_name(), str(self._params["checkpoint"]),
                                           self.get_clock().now().to_msg()))


def main(args=None) -> int:
    # Our own SIGINT/SIGTERM handling: the context must stay up long enough to hold the robot, and
    # the signal only asks the loop below to stop (see StopRequest: a KeyboardInterrupt raised inside
    # the executor's thread pool can leave a lock taken and the shutdown waiting for ever).
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = StopRequest()
    node = PolicyNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    code = 0
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                code = 1
            elif not stop.requested and node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                code = 1
        if code == 0:
            spin(executor, until=lambda: stop.requested, check_period_s=SIGNAL_CHECK_PERIOD_S)
        if stop.requested:
            node.get_logger().info(f"{stop.signal_name}: holding the robot and shutting down (Ctrl-C again aborts)")
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node._state_label != "finalized" and rclpy.ok():
            node.trigger_shutdown()  # holds the robot, frees the model, waits for a running inference
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        stop.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
