"""The simulated Franka (digital twin) behind uwm_sim.

node                  uwm_sim: the simulated Franka as a ROS 2 node (uwm-sim-node)
franka_env.SimFranka  robosuite/MuJoCo Panda on a table, commanded like an impedance controller
tasks                 the tasks (lift, stack) and their objects
rendering             headless GL backend choice and the fast camera renderer
expert                the scripted expert (pure logic, shared by its node and bench/expert_success.py)
expert_node           the expert as a ROS node on the robot interface (uwm_ros.robot; uwm-sim-expert)
ros_interface         topics, QoS and message conversions shared by the two nodes
metrics               success-rate statistics

Nothing here imports robosuite or mujoco at package import; franka_env does, after choosing the
GL backend.
"""
