"""The files training and the tooling share, pure NumPy (never imports ksim, mujoco, jax or xax).

- `schema`: `StepLog`, one log schema for real robot logs (kinfer NDJSON) and simulated rollouts.
- `profile`: a log's entropy profile (per-channel mean/std, diagonal-Gaussian entropy), a training target.
- `fitted`: `fitted.json`, the randomization ranges a fit to real logs produced.
- `jsonfile`: strict JSON reading (duplicate keys, NaN) and atomic writing.
- `windows`: real logs as windows of the policy's input vector (`.npz`), for domain-adversarial training.

The tooling that makes and compares them lives in `ksim_entropy.bridge` and `ksim_entropy.sim2real`.
"""
