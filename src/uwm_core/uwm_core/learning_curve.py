"""The learning curve of a training run as a PNG: held-out action error and observation use
against steps, read from the run's TensorBoard events (so a resumed run plots its whole history)."""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure  # not pyplot: a file only, no display backend
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

CURVES = (("eval/action_mse", "held-out action MSE (dataset units)"),
          ("eval/obs_sensitivity", "obs sensitivity (action change, other obs)"))


def read_scalars(tb_dir: Path | str, tags=tuple(tag for tag, _ in CURVES)) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of the tags the events hold."""
    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    events.Reload()
    present = set(events.Tags()["scalars"])
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags if tag in present}


def plot_learning_curve(tb_dir: Path | str, png: Path | str) -> Path | None:
    """Write the curves to ``png``; None when the run logged no evaluation yet."""
    curves = read_scalars(tb_dir)
    if not curves:
        return None
    fig = Figure(figsize=(5 * len(CURVES), 3.4))
    axes = fig.subplots(1, len(CURVES), squeeze=False)
    for ax, (tag, label) in zip(axes[0], CURVES):
        points = curves.get(tag, [])
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o")
        ax.set(title=label, xlabel="training step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    return Path(png)
