import os

import pytest
from helpers import isa_params
from hypothesis import HealthCheck, settings

import fastconv

settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=isa_params())
def isa(request):
    """Run the test once on every instruction-set path this machine has."""
    with fastconv.use_isa(request.param):
        yield request.param
