"""uwm_core: Unified World Models (model, diffusion, data, training). Imports no ROS module."""
from .world_model import WorldModel

__all__ = ["WorldModel"]
__version__ = "0.1.0"
