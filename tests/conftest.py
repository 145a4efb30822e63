"""Process defaults for the tests, as the entry points set them: headless MuJoCo (EGL), no TensorBoard server."""

from ksim_entropy.runtime import configure_headless

configure_headless()
