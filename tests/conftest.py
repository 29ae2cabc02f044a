"""Shared test settings: a fixed, derandomized hypothesis profile."""
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "jaxgrad",
    derandomize=True,
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "jaxgrad"))
