"""uwm_core: Unified World Models (model, diffusion, data, training). Imports no ROS module."""

__all__ = ["WorldModel"]
__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: `import uwm_core.spatial` (teleop, recorder) must not pay for torch and diffusers.
    if name == "WorldModel":
        from .world_model import WorldModel

        return WorldModel
    raise AttributeError(f"module 'uwm_core' has no attribute {name!r}")
