"""Transitions of a lifecycle node (the policy) through its change_state / get_state services."""
from __future__ import annotations

import time

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState

TRANSITIONS = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP,
               "shutdown": Transition.TRANSITION_INACTIVE_SHUTDOWN}
POLL_S = 0.02
SERVICE_READY_S = 60.0


def poll_until(predicate, timeout_s: float, what: str):
    """Poll ``predicate`` until truthy (returned); TimeoutError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)
    return value


class ServiceFailed(RuntimeError):
    """A service answered with an exception."""


def call_service(client, request, timeout_s: float, wait=poll_until, ready_timeout_s: float = SERVICE_READY_S):
    """Call a service through ``client`` (its node spun by another thread) and return the response."""
    wait(client.service_is_ready, ready_timeout_s, f"service {client.srv_name}")
    future = client.call_async(request)
    wait(future.done, timeout_s, f"the response of {client.srv_name}")
    if future.exception() is not None:
        raise ServiceFailed(f"service {client.srv_name} failed: {future.exception()}")
    return future.result()


class LifecycleClient:
    """Clients on ``node`` (spun by another thread) for the lifecycle node named ``target``.

    ``call(client, request, timeout_s)`` performs one service call (default ``call_service``; the
    orchestration's RosClient passes one that also watches its processes and raises its errors).
    """

    def __init__(self, node, target: str, call=call_service):
        self.node, self.target, self._call = node, target, call
        self._change = node.create_client(ChangeState, f"{target}/change_state")
        self._get = node.create_client(GetState, f"{target}/get_state")

    def change(self, transition: str, timeout_s: float = 60.0) -> bool:
        """Request ``transition`` (configure, activate, deactivate, cleanup, shutdown); True on success."""
        request = ChangeState.Request()
        request.transition.id = TRANSITIONS[transition]
        return bool(self._call(self._change, request, timeout_s).success)

    def state(self, timeout_s: float = 30.0) -> str:
        """The node's current state label (unconfigured, inactive, active, finalized)."""
        return self._call(self._get, GetState.Request(), timeout_s).current_state.label

    def destroy(self) -> None:
        self.node.destroy_client(self._change)
        self.node.destroy_client(self._get)
