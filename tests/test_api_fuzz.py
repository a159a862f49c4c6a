"""A property-based fuzzer (schemathesis) against the controller's own OpenAPI description, with and
without credentials: whatever it sends, the controller never answers 5xx.

The controller is the real one (`assemble`: every store on a real state file, the real healer, no cloud),
in process over ASGI. Bounded: a fixed number of examples per operation and a derandomized run, so CI
takes the same time each run.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from controller.app.service import assemble
from controller.config import ClusterConfig, ControllerConfig

ADMIN = "admin-token-for-the-fuzzer-0123456789"
READ = "read-token-for-the-fuzzer-0123456789"

_dir = Path(tempfile.mkdtemp(prefix="redwarden-fuzz-"))
atexit.register(shutil.rmtree, _dir, True)
(_dir / "admin.token").write_text(ADMIN + "\n")
(_dir / "read.token").write_text(READ + "\n")
(_dir / "redis.pass").write_text("fuzz-redis-password\n")
_config = ControllerConfig(
    state_path=str(_dir / "state.db"), admin_token_file=str(_dir / "admin.token"),
    read_token_file=str(_dir / "read.token"),
    clusters={"shop": ClusterConfig(redis_password_file=str(_dir / "redis.pass"))},
)
_parts = assemble(_config, cloud=None)
atexit.register(_parts.db.close)

schema = schemathesis.openapi.from_asgi("/openapi.json", _parts.app, headers={"Authorization": f"Bearer {READ}"})

CREDENTIALS = {"none": {}, "read": {"Authorization": f"Bearer {READ}"}, "admin": {"Authorization": f"Bearer {ADMIN}"}}


@pytest.mark.parametrize("who", sorted(CREDENTIALS))
@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_no_input_gets_a_5xx(case: schemathesis.Case, who: str) -> None:
    response = case.call(headers=CREDENTIALS[who])
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
