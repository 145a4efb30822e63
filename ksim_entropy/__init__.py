"""ksim-entropy: entropy-driven sim-to-real transfer for K-Scale's ksim and the K-Bot."""

from ksim_entropy import jax_compat
from ksim_entropy.runtime import configure_headless

configure_headless()
jax_compat.apply()  # before anything imports ksim or xax (a no-op on the locked jax 0.8.0)

__version__ = "0.1.0"
