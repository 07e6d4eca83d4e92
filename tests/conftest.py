import os
import tempfile

# the suite never writes to the user's kernel cache
os.environ.setdefault("TAPEAD_CACHE_DIR", tempfile.mkdtemp(prefix="tapead-test-cache-"))
# background O2 recompilation is tested on its own (tests/backend/test_compile_policy.py); elsewhere it would only
# compete with the tests for the two cores
os.environ.setdefault("TAPEAD_BACKGROUND_O2", "0")

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=200,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=50)
settings.register_profile("long", deadline=None, max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
