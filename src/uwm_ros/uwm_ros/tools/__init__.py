"""Demo and evaluation tooling: the stack's nodes run as processes and driven over ROS 2.

    demo        uwm-demo: scripted demos -> bags -> dataset -> training -> closed-loop evaluation
    eval_sim    uwm-eval-sim: a checkpoint's policy node against the simulated Franka
    sim_demos   recording scripted demonstrations and converting them
    rollout_recorder  what an evaluation observes of a rollout, and its actions and states
    rollout_media     the evaluation's video and predicted-frames strip
    processes   node processes, logs, isolation of the ROS graph
    ros_client  one rclpy node of the orchestrating process
"""
