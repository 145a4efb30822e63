"""ksim-entropy: entropy-driven sim-to-real transfer for K-Scale's ksim and the K-Bot."""

from ksim_entropy.runtime import configure_headless

configure_headless()

__version__ = "0.1.0"
