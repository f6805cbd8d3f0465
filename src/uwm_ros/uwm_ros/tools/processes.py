"""Running the stack's nodes as separate processes, for uwm-eval-sim, uwm-demo and the benchmarks.

Every node (sim, scripted expert, recorder, policy) runs as its own console script, exactly as a
user would start it, with its output in a log file; the orchestrating process talks to them over
real DDS through one rclpy node spinning in a background thread (``ros_client.RosClient``). A process that
dies, a service that does not answer or a condition that is never met ends in an
``OrchestrationError`` naming the process or service and the log file to read.

Isolation: ``isolate_ros_graph`` confines DDS discovery to this machine and picks a ROS domain
(the environment's ``ROS_DOMAIN_ID`` when set, else a random one), so a demo never talks to a
robot or another user's nodes on the network. Children inherit it through the environment.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from uwm_ros.launch_helpers import config_path

LOG_TAIL_LINES = 15
STOP_GRACE_S = 10.0  # SIGINT, then this long before SIGTERM, then as long again before SIGKILL
POLL_S = 0.02


class OrchestrationError(RuntimeError):
    """A node process or a ROS interaction failed; the message names it and its log file."""


def log_tail(path: Path | str | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file (indented), or '' when there is none."""
    if path is None or not Path(path).is_file():
        return ""
    text = Path(path).read_text(errors="replace").rstrip().splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in text)


# ---------------------------------------------------------------------- files and environment
def ros_config_file(name: str) -> Path:
    """config/<name> of uwm_ros (located as the launch files do); FileNotFoundError when missing."""
    path = Path(config_path(name)).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: uwm_ros configuration file is missing")
    return path


def read_node_params(path: Path | str) -> dict:
    """The ``/**: ros__parameters`` of a node parameter YAML file."""
    with open(path) as f:
        return dict(yaml.safe_load(f)["/**"]["ros__parameters"])


def console_script(name: str) -> str:
    """The path of one of the workspace's console scripts: next to this Python, else on PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise OrchestrationError(f"console script {name} is not installed (run ./scripts/setup.sh, or "
                                 "pip install -e each package under src/)")
    return found


def ros_args(params_files=(), params: dict | None = None) -> list[str]:
    """``--ros-args`` for parameter files (applied in order) and single parameters (last)."""
    args = ["--ros-args"]
    for path in params_files:
        args += ["--params-file", str(path)]
    for name, value in (params or {}).items():
        args += ["-p", f"{name}:={json.dumps(value)}"]  # JSON values are valid YAML, strings stay strings
    return args


def isolate_ros_graph(domain_id: int | None = None) -> int:
    """Keep this process's and its children's DDS traffic on this machine, in one ROS domain.

    Must run before rclpy is initialised in this process. Returns the domain id."""
    if domain_id is None:
        domain_id = int(os.environ.get("ROS_DOMAIN_ID") or random.randint(1, 100))
    if not 0 <= domain_id <= 232:
        raise ValueError(f"ROS domain id {domain_id} must be in 0..232")
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")  # plain log files
    return domain_id


def cooperative_threads() -> None:
    """Let idle OpenMP threads sleep instead of spin (set before torch loads; children inherit it).

    The demo's processes share the CPU cores (sim rendering, policy inference, training next to
    whatever else runs): with OpenMP's default busy-waiting, two processes on 2 cores each spin on
    the other's core, which made a training step about 7 times slower here."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ[_COOPERATIVE_MARK] = "1"


_COOPERATIVE_MARK = "UWM_COOPERATIVE_THREADS"  # OMP_WAIT_POLICY was set by cooperative_threads


def exclusive_threads_env() -> dict:
    """The environment for a stage that has the cores to itself (the demo's training): OpenMP's
    default busy-waiting again (1.5x faster training steps here than PASSIVE), unless the user
    chose a wait policy."""
    env = dict(os.environ)
    if env.pop(_COOPERATIVE_MARK, None):
        env.pop("OMP_WAIT_POLICY", None)
    return env


# ---------------------------------------------------------------------- processes
class NodeProcess:
    """One child process with its output in ``log_path``; in its own session, so stopping it
    (SIGINT, then SIGTERM, then SIGKILL to its process group) also ends anything it started."""

    def __init__(self, name: str, argv: list[str], log_path: Path | str, env: dict | None = None):
        self.name, self.argv, self.log_path = name, list(argv), Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env, start_new_session=True)

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def failure(self) -> str:
        return (f"{self.name} exited with code {self.returncode}; its log {self.log_path} ends with:\n"
                f"{log_tail(self.log_path)}")

    def check(self) -> None:
        """Raise OrchestrationError when the process has exited."""
        if self.returncode is not None:
            raise OrchestrationError(self.failure())

    def wait(self, timeout_s: float | None = None) -> int:
        return self.popen.wait(timeout_s)

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """End the process (and its process group); its exit code."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if self.popen.poll() is not None:
                break
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                continue
        return self.popen.poll()


class ProcessGroup:
    """Node processes that live as long as a ``with`` block and are stopped in reverse order."""

    def __init__(self, log_dir: Path | str, env: dict | None = None):
        self.log_dir = Path(log_dir)
        self.env = dict(os.environ if env is None else env)
        self.processes: list[NodeProcess] = []

    def start(self, name: str, argv: list[str], log_name: str | None = None) -> NodeProcess:
        process = NodeProcess(name, argv, self.log_dir / (log_name or f"{name}.log"), self.env)
        self.processes.append(process)
        return process

    def check(self) -> None:
        for process in self.processes:
            process.check()

    def stop(self) -> None:
        while self.processes:
            self.processes.pop().stop()

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def last_log_line(path: Path | str) -> str:
    """The last non-empty line of a log, where a progress bar's carriage returns also end lines."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.replace("\r", "\n").split("\n")
             if line.strip() and not line.startswith("$ ")]  # not the command line NodeProcess logs first
    return lines[-1] if lines else ""


def run_logged(name: str, argv: list[str], log_path: Path | str, env: dict | None = None,
               timeout_s: float | None = None, say=None, heartbeat_s: float = 15.0) -> None:
    """Run a command to completion with its output in ``log_path``; OrchestrationError names the
    command and its log when it fails or runs past ``timeout_s``. With ``say``, the log's latest
    line is passed to it every ``heartbeat_s`` (when it changed): progress of a long stage."""
    process = NodeProcess(name, argv, log_path, env)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    shown = ""
    try:
        while process.returncode is None:
            if deadline is not None and time.monotonic() > deadline:
                process.stop()
                raise OrchestrationError(f"{name} did not finish within {timeout_s:.0f} s; its log {log_path} "
                                         f"ends with:\n{log_tail(log_path)}")
            try:
                process.wait(heartbeat_s if say is not None else 1.0)
            except subprocess.TimeoutExpired:
                line = last_log_line(log_path) if say is not None else ""
                if line and line != shown:
                    say(f"    {line}")
                    shown = line
    except BaseException:  # Ctrl-C: the child is in its own session, end it too
        process.stop()
        raise
    if process.returncode != 0:
        raise OrchestrationError(process.failure())
