"""uwm-recorder (``ros2 run uwm_teleop recorder_node``): one rosbag2 MCAP per teleoperated episode.

Subscribes with raw (serialized) subscriptions to the configured camera, measured-pose, command
and gripper topics (each topic's type and reliability taken from its publishers, like
``ros2 bag record``) and writes the CDR bytes as they are, with ``rosbags`` (storage MCAP, Jazzy
type definitions): images are never deserialised.

Episode control (the teleop terminal's keys call the same services):

* ``~/start`` (std_srvs/Trigger): start an episode with the task in the ``task`` parameter
  (``ros2 param set /recorder task "pick the cube"``); refused while a configured topic has no
  publisher yet;
* ``~/stop`` (std_srvs/SetBool): finish it, ``data`` true = success, false = failure;
* ``~/discard`` (std_srvs/Trigger): throw it away (kept with outcome ``discarded`` when
  ``keep_discarded`` is true).

An episode is written into ``<output_dir>/episode_NNNN_<time>.partial/`` and renamed to
``episode_NNNN_<time>/`` only once the bag is closed and synced (``episode_bag``), so a killed
recorder never damages earlier episodes and its interrupted one stays marked ``.partial`` (the
converter reports and skips it). Ctrl-C / SIGTERM close the open episode with outcome ``incomplete``. The task,
outcome, role -> topic map, episode id and software version go into the bag's metadata.yaml
``custom_data``. A live status line (episode, duration, per-topic rates, dropped messages) is
printed on the terminal and published on ``~/status``.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import queue
import re
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from uwm_core.stop_request import StopRequest
from uwm_ros.robot.spinning import spin
from uwm_teleop.bag_reading import META_EPISODE_ID, META_SOFTWARE, META_STARTED, META_TASK, META_TOPICS
from uwm_teleop.episode_bag import EpisodeBag

EPISODE_NAME = re.compile(r"^episode_(\d+)_")
ROLE_PARAMETERS = ("pose_topic", "delta_topic", "target_topic", "gripper_topic")
PLAIN_STATUS_PERIOD_S = 10.0  # the status as a log line where it cannot be redrawn in place

PARAMETERS = {  # name: (default, description)
    "output_dir": ("data/bags", "directory that receives one rosbag2 (MCAP) directory per episode"),
    "task": ("", "task description stored with the next episode (set it before calling ~/start)"),
    "camera_names": (["left", "right", "wrist"], "dataset camera names, in the order of camera_topics"),
    "camera_topics": (["/cameras/left/image_raw", "/cameras/right/image_raw", "/cameras/wrist/image_raw"],
                      "image topics (sensor_msgs/Image or CompressedImage), one per camera name"),
    "pose_topic": ("/franka_robot_state_broadcaster/current_pose", "measured end-effector pose (PoseStamped); "
                   "'' to not record"),
    "delta_topic": ("/teleop/delta_ee", "per-step command deltas (TwistStamped) of the teleop node; '' to not record"),
    "target_topic": ("/cartesian_impedance_controller/target_pose", "commanded target pose (PoseStamped); "
                     "'' to not record"),
    "gripper_topic": ("/gripper/command", "gripper command (std_msgs/Float32); '' to not record"),
    "extra_topics": ([""], "further topics recorded as they are (not used by the converter)"),
    "keep_discarded": (False, "keep discarded episodes on disk (outcome 'discarded') instead of deleting them"),
    "max_queue_mb": (512, "messages waiting for the disk beyond this are dropped (and counted)"),
    "status_period_s": (1.0, "period of the status line (in place on a terminal; else a log line every "
                        "10 s at most) and of ~/status"),
    "discovery_period_s": (0.5, "how often configured topics without a subscription are looked up"),
}


def software_version() -> str:
    versions = []
    for package in ("uwm_teleop", "rosbags"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed as a package)")
    return ", ".join(versions)


def message_class(type_name: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    package, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


class RecorderNode(Node):
    def __init__(self, **kwargs):
        super().__init__("recorder", **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        param = lambda name: self.get_parameter(name).value  # noqa: E731
        names, cameras = list(param("camera_names")), list(param("camera_topics"))
        if len(names) != len(cameras) or not cameras or "" in names or "" in cameras:
            raise ValueError(f"parameters camera_names={names} and camera_topics={cameras} must be non-empty "
                             "lists of the same length")
        self.output_dir = Path(param("output_dir")).expanduser()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        # role -> topic map stored in every bag (the converter reads it)
        self.roles = {"cameras": dict(zip(names, cameras))}
        self.roles.update({p[:-6]: param(p) for p in ROLE_PARAMETERS if param(p)})
        self.topics = list(dict.fromkeys(cameras + [param(p) for p in ROLE_PARAMETERS if param(p)] +
                                         [t for t in param("extra_topics") if t]))
        self.keep_discarded = bool(param("keep_discarded"))
        self.max_queue_bytes = int(param("max_queue_mb")) * 2**20

        self.types: dict[str, str] = {}  # topic -> type name, once subscribed
        self.subscriptions_by_topic = {}
        self.received = {t: 0 for t in self.topics}  # since the last status line (rates)
        self.dropped = {t: 0 for t in self.topics}  # this episode: queue overflow + lost in DDS
        self.lock = threading.Lock()
        self.episode: EpisodeBag | None = None
        self.episode_task = ""
        self.saved = 0
        self.queue: queue.Queue = queue.Queue()
        self.queued_bytes = 0
        self.writer_error: str | None = None
        self.writer_thread = threading.Thread(target=self._write_loop, name="bag-writer", daemon=True)
        self.writer_thread.start()

        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(SetBool, "~/stop", self._on_stop)
        self.create_service(Trigger, "~/discard", self._on_discard)
        self.status_pub = self.create_publisher(String, "~/status", 10)
        self.status_period = float(param("status_period_s"))
        self.last_status = time.monotonic()
        self.create_timer(self.status_period, self._on_status)
        self.create_timer(float(param("discovery_period_s")), self._discover)
        self.tty = sys.stderr.isatty()
        self._discover()
        self.get_logger().info(f"recording topics {self.topics} into {self.output_dir.resolve()}; "
                               "call ~/start, ~/stop (data: success), ~/discard")

    # ------------------------------------------------------------------ subscriptions
    def _discover(self) -> None:
        graph = dict(self.get_topic_names_and_types())
        for topic in self.topics:
            if topic in self.subscriptions_by_topic or topic not in graph:
                continue
            type_names = graph[topic]
            if len(type_names) != 1:
                self.get_logger().error(f"topic {topic} has several types {type_names}: not recorded",
                                        throttle_duration_sec=10.0)
                continue
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            reliable = all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100 if reliable else 20,
                             reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                             durability=DurabilityPolicy.VOLATILE)
            callback = lambda raw, topic=topic: self._on_message(topic, raw)  # noqa: E731
            kwargs = dict(raw=True)
            try:
                kwargs["event_callbacks"] = SubscriptionEventCallbacks(
                    message_lost=lambda info, topic=topic: self._on_lost(topic, info.total_count_change))
                subscription = self.create_subscription(message_class(type_names[0]), topic, callback, qos, **kwargs)
            except UnsupportedEventTypeError:
                del kwargs["event_callbacks"]
                subscription = self.create_subscription(message_class(type_names[0]), topic, callback, qos, **kwargs)
            self.types[topic] = type_names[0]
            self.subscriptions_by_topic[topic] = subscription
            self.get_logger().info(f"subscribed to {topic} ({type_names[0]}, "
                                   f"{'reliable' if reliable else 'best effort'})")

    def _on_message(self, topic: str, raw: bytes) -> None:
        log_ns = self.get_clock().now().nanoseconds
        with self.lock:
            self.received[topic] += 1
            episode = self.episode
            if episode is None:
                return
            if self.queued_bytes + len(raw) > self.max_queue_bytes:
                self.dropped[topic] += 1
                return
            self.queued_bytes += len(raw)
        self.queue.put(("message", episode, topic, log_ns, raw))

    def _on_lost(self, topic: str, count: int) -> None:
        with self.lock:
            if self.episode is not None:
                self.dropped[topic] += count

    # ------------------------------------------------------------------ the disk
    def _write_loop(self) -> None:
        while True:
            item = self.queue.get()
            kind = item[0]
            if kind == "message":
                _, episode, topic, log_ns, raw = item
                try:
                    if self.writer_error is None:
                        episode.write(topic, self.types[topic], log_ns, raw)
                except Exception as err:  # disk full, ...: reported by the status and on stop
                    self.writer_error = f"writing {episode.name} failed: {err}"
                    self.get_logger().error(self.writer_error)
                with self.lock:
                    self.queued_bytes -= len(raw)
            elif kind == "call":  # run a finishing step after every message queued before it
                _, function, done = item
                try:
                    done.result = function()
                except Exception as err:
                    done.error = err
                done.set()
            else:
                return

    def _after_queued(self, function):
        """Run ``function`` in the writer thread once the queue before it is written; its result."""
        done = threading.Event()
        done.result, done.error = None, None
        self.queue.put(("call", function, done))
        done.wait()
        if done.error is not None:
            raise done.error
        return done.result

    # ------------------------------------------------------------------ services
    def _next_name(self) -> str:
        indices = [int(m.group(1)) for p in self.output_dir.iterdir() if (m := EPISODE_NAME.match(p.name))]
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return f"episode_{max(indices, default=0) + 1:04d}_{stamp}"

    def _on_start(self, request, response):
        with self.lock:
            busy = self.episode is not None
        if busy:
            response.success, response.message = False, f"already recording {self.episode.name}"
            return response
        missing = [t for t in self.topics if t not in self.types]
        if missing:
            response.success = False
            response.message = f"not started: no publisher yet on {missing}"
            return response
        task = self.get_parameter("task").value
        custom = {META_TASK: task, META_EPISODE_ID: uuid.uuid4().hex, META_TOPICS: json.dumps(self.roles),
                  META_SOFTWARE: software_version(),
                  META_STARTED: datetime.now(timezone.utc).isoformat(timespec="seconds")}
        try:
            episode = EpisodeBag(self.output_dir, self._next_name(), custom)
            for topic in self.topics:
                episode.add_topic(topic, self.types[topic])
        except Exception as err:
            response.success, response.message = False, f"cannot create the episode bag: {err}"
            return response
        with self.lock:
            self.dropped = {t: 0 for t in self.topics}
            self.writer_error = None
            self.episode, self.episode_task = episode, task
        response.success = True
        response.message = f"recording {episode.name} (task {task!r})"
        self.get_logger().info(response.message)
        return response

    def _take_episode(self) -> EpisodeBag | None:
        with self.lock:
            episode, self.episode = self.episode, None
        return episode

    def _on_stop(self, request, response):
        outcome = "success" if request.data else "failure"
        response.success, response.message = self._finish(outcome)
        return response

    def _finish(self, outcome: str) -> tuple[bool, str]:
        episode = self._take_episode()
        if episode is None:
            return False, "not recording"
        try:
            path = self._after_queued(lambda: episode.finish(outcome))
        except Exception as err:
            message = f"could not finish {episode.name}: {err} (its data stays in {episode.partial_path})"
            self.get_logger().error(message)
            return False, message
        self.saved += 1
        dropped = sum(self.dropped.values())
        message = (f"saved {path} ({outcome}, {episode.count} messages, "
                   f"{time.monotonic() - episode.started:.1f} s, {dropped} dropped)")
        if self.writer_error:
            message += f"; WARNING {self.writer_error}"
        self.get_logger().info(message)
        return True, message

    def _on_discard(self, request, response):
        if self.keep_discarded:
            response.success, response.message = self._finish("discarded")
            return response
        episode = self._take_episode()
        if episode is None:
            response.success, response.message = False, "not recording"
            return response
        self._after_queued(episode.discard)
        response.success, response.message = True, f"discarded {episode.name}"
        self.get_logger().info(response.message)
        return response

    # ------------------------------------------------------------------ status
    def status_line(self) -> str:
        now = time.monotonic()
        elapsed = max(now - self.last_status, 1e-3)
        with self.lock:
            rates = {t: n / elapsed for t, n in self.received.items()}
            self.received = {t: 0 for t in self.topics}
            episode, dropped, queued = self.episode, sum(self.dropped.values()), self.queued_bytes
        self.last_status = now
        head = (f"REC {episode.name} {self.episode_task!r} {now - episode.started:6.1f}s"
                if episode else f"idle, {self.saved} saved")
        topics = " ".join(f"{t}:{'-' if t not in self.types else f'{r:.1f}Hz'}" for t, r in rates.items())
        line = f"[recorder] {head} | {topics} | dropped {dropped} | queue {queued / 2**20:.0f}MB"
        if self.writer_error:
            line += f" | {self.writer_error}"
        return line

    def _on_status(self) -> None:
        line = self.status_line()
        self.status_pub.publish(String(data=line))
        if self.tty:  # redrawn in place on a terminal
            print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
        else:  # a log file or `ros2 launch`, which prints whole lines only: a plain line now and then
            self.get_logger().info(line, throttle_duration_sec=PLAIN_STATUS_PERIOD_S)

    def close(self) -> None:
        """Finish an open episode as incomplete (Ctrl-C, SIGTERM) and stop the writer thread."""
        if self.episode is not None:
            self._finish("incomplete")
        self.queue.put(("stop",))
        self.writer_thread.join(timeout=10.0)


def main(args=None) -> int:
    # Ctrl-C / SIGTERM only ask the spin to stop (StopRequest): a KeyboardInterrupt raised inside a
    # message callback could leave the episode lock or the disk queue's lock taken, and close()
    # (which writes the open episode) would wait for it for ever.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = StopRequest()
    node = None
    try:
        node = RecorderNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spin(executor, until=lambda: stop.requested)
    except (KeyboardInterrupt, ExternalShutdownException):  # a second Ctrl-C; an external shutdown
        pass
    except ValueError as err:
        print(f"uwm-recorder: {err}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
        stop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
