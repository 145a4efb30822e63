"""`python -m tasks.<name>` from a checkout: each module runs `ksim_entropy.cli.<name>` (installed: `ksim-<name>`).

The wheel does not ship this package (a top-level `tasks` would collide with a user's own); the commands live in
`ksim_entropy.cli`.
"""
