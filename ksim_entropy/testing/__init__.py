"""Test doubles for this package's own tests and benches, and for yours: never used by training or deployment.

- `reality`: a stand-in "real" K-Bot (1 kHz CPU MuJoCo with hidden physics, latencies, joint offsets, IMU bias
  and noise) that writes logs in the bridge's schema;
- `kos_server`: a KOS gRPC server (pykos's service definitions) backed by that robot, with fault injection and
  kos-sim's quirks on request (`python -m ksim_entropy.testing.kos_server`), to test a deploy loop against a real
  server.
"""
