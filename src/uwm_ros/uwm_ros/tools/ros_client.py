"""One rclpy node in a context of its own, for orchestrating processes that talk ROS 2."""
from __future__ import annotations

import threading

import rclpy
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from uwm_ros.robot import spin
from uwm_ros.robot.lifecycle_client import LifecycleClient, ServiceFailed, call_service, poll_until
from uwm_ros.tools.processes import OrchestrationError, ProcessGroup


class RosClient:
    """One rclpy node in a context of its own, spun by a background thread.

    Subscriptions are created on ``node`` (their callbacks run on the spinning thread); ``call``
    and ``wait_for`` block the calling thread while checking that ``watch``'s processes live.
    """

    def __init__(self, name: str, watch: ProcessGroup | None = None, use_sim_time: bool = False):
        self.watch = watch
        self.context = rclpy.Context()
        # no rclpy signal handler: Ctrl-C raises KeyboardInterrupt and the callers stop their processes
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context,
                                      parameter_overrides=[Parameter("use_sim_time", value=use_sim_time)])
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=spin, args=(self.executor,), name=f"{name}-spin", daemon=True)
        self._spinner.start()

    def _check_processes(self) -> None:
        if self.watch is not None:
            self.watch.check()

    def wait_for(self, predicate, timeout_s: float, what: str):
        """Poll ``predicate`` until it returns a truthy value (returned); OrchestrationError naming
        ``what`` after ``timeout_s`` or as soon as a watched process dies."""
        def ready_while_alive():
            value = predicate()
            if not value:
                self._check_processes()
            return value

        try:
            return poll_until(ready_while_alive, timeout_s, what)
        except TimeoutError as err:
            raise OrchestrationError(f"{err}{self._logs_hint()}") from None

    def _logs_hint(self) -> str:
        if self.watch is None or not self.watch.processes:
            return ""
        return " (logs: " + ", ".join(str(p.log_path) for p in self.watch.processes) + ")"

    def call(self, service_type, name: str, request=None, timeout_s: float = 30.0, ready_timeout_s: float = 60.0):
        """Call a service and return its response."""
        client = self.node.create_client(service_type, name)
        try:
            return self.call_client(client, request if request is not None else service_type.Request(), timeout_s,
                                    ready_timeout_s)
        finally:
            self.node.destroy_client(client)

    def call_client(self, client, request, timeout_s: float = 30.0, ready_timeout_s: float = 60.0):
        """``call_service`` waiting while the watched processes live; failures as OrchestrationError."""
        try:
            return call_service(client, request, timeout_s, self.wait_for, ready_timeout_s)
        except ServiceFailed as err:
            raise OrchestrationError(str(err)) from None

    def set_parameters(self, node_name: str, timeout_s: float = 30.0, **values) -> None:
        """Set parameters of another node through its ``set_parameters`` service."""
        request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        response = self.call(SetParameters, f"{node_name}/set_parameters", request, timeout_s)
        refused = [f"{k}: {r.reason}" for k, r in zip(values, response.results) if not r.successful]
        if refused:
            raise OrchestrationError(f"{node_name} refused parameters: {'; '.join(refused)}")

    def lifecycle(self, node_name: str) -> LifecycleClient:
        """A client for the transitions of the lifecycle node ``node_name`` (e.g. the policy)."""
        return LifecycleClient(self.node, node_name, self.call_client)

    def close(self) -> None:
        self.executor.shutdown()
        self._spinner.join(5.0)
        self.node.destroy_node()
        self.context.try_shutdown()

    def __enter__(self) -> "RosClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
