"""The simulated tasks: which robosuite environment, which objects, what the operator is told."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    name: str
    robosuite_env: str
    instruction: str  # the task string stored with recorded episodes
    objects: tuple[str, ...]  # robosuite attribute names of the task objects, in ~/object_poses order
    max_steps: int  # a generous episode limit at 10 Hz for the scripted expert and evaluations


TASKS = {
    "lift": TaskSpec("lift", "Lift", "lift the red cube", ("cube",), max_steps=120),
    "stack": TaskSpec("stack", "Stack", "stack the red cube on the green cube", ("cubeA", "cubeB"), max_steps=200),
}


def get_task(name: str) -> TaskSpec:
    """The task called ``name``; ValueError lists the tasks the simulator knows."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown sim task {name!r}; valid tasks: {', '.join(TASKS)}") from None
