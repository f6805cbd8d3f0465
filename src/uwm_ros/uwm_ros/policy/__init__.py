"""The policy lifecycle node (``node``) and its plain-Python parts.

    node             PolicyNode: lifecycle transitions, subscriptions, publishers
    configuration    its parameters and the checks configure runs on them and on the checkpoint
    control          the control loop: one tick per period, holds, chunk requests
    camera_sync      camera buffers and synchronised observation histories
    chunk_scheduler  which action of which chunk each tick executes
    inference_worker inference off the control thread
    status           ~/status, /diagnostics and the predicted-frames grid
"""
