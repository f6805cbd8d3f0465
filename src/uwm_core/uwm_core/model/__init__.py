"""UWM network modules (DiT-style: one small file per idea)."""
from .uwm import MODES, VARIANT_MODES, UnifiedWorldModel

__all__ = ["MODES", "VARIANT_MODES", "UnifiedWorldModel"]
