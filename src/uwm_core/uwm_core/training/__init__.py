"""The pieces of uwm-train (``uwm_core.train``, which reads top to bottom: setup, then the loop):
configuration, processes, data, the optimisation step, checkpoints, evaluation and step hooks."""
