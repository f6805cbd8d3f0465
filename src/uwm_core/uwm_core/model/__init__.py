"""UWM network modules (DiT-style: one small file per idea)."""
from .uwm import UnifiedWorldModel

__all__ = ["UnifiedWorldModel"]
