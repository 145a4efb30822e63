"""ksim-entropy: entropy-driven sim-to-real transfer for K-Scale's ksim and the K-Bot."""

from ksim_entropy import compat

# Importing the library changes no environment variable; the entry points (`ksim_entropy.cli`) call
# runtime.configure_headless.
compat.install()  # shims for current JAX, applied before ksim or xax loads (a no-op on the locked jax 0.8.0)

__version__ = "0.1.0"
