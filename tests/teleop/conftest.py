"""Shared fixtures of the teleop/recorder/conversion tests: rclpy, node processes, params files."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))  # bagfactory, teleop_test_helpers
from teleop_test_helpers import BIN  # noqa: E402


class NodeProcess:
    """A node's console script in its own process, parameters from a params file, log to a file."""

    def __init__(self, script: str, params: dict, workdir: Path, name: str, **popen):
        self.log_path = workdir / f"{name}.log"
        params_path = workdir / f"{name}.yaml"
        params_path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        self.log = open(self.log_path, "w")
        popen.setdefault("stdout", self.log)
        self.proc = subprocess.Popen([str(BIN / script), "--ros-args", "--params-file", str(params_path)],
                                     stderr=subprocess.STDOUT, **popen)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def stop(self, sig=signal.SIGINT, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.proc.args[0]} did not exit after {sig!r}:\n{self.output()[-3000:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def node_processes():
    started = []

    def start(*args, **kwargs) -> NodeProcess:
        process = NodeProcess(*args, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()
