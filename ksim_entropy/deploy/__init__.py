"""Run a `.kinfer` policy on a K-Bot over KOS (pykos gRPC), and a KOS server with a simulated K-Bot behind it.

- `robot_map`: model joints ↔ KOS actuator ids, gains, torque and joint limits, from the robot's `metadata.json`;
- `loop`: the deployment loop (deadline scheduling, soft start, clamping, watchdog, NDJSON log);
- `sim_server`: a KOS server (pykos's service definitions) backed by the stand-in robot of `ksim_entropy.reality`
  in CPU MuJoCo at 1 kHz, with fault injection, to test the loop against a real gRPC server.
"""
