"""uwm_ros."""
