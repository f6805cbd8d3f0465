"""uwm_teleop."""
