"""Run a `.kinfer` policy on a K-Bot over KOS (pykos gRPC).

- `robot_map`: model joints ↔ KOS actuator ids, gains, torque and joint limits, from the robot's `metadata.json`;
- `loop`: the deployment loop (deadline scheduling, soft start, clamping, watchdog, NDJSON log);
- `gyro_check`: the gyroscope's unit (deg/s or rad/s) read off the quaternion's rate;
- `kos_sim`: K-Scale's kos-sim in its own environment, started on localhost, its robot cache seeded offline.

The KOS server with the stand-in robot behind it, to test a loop against, is `ksim_entropy.testing.kos_server`.
"""
