"""schemathesis against the daemon's own /openapi.json, on its TCP listener.

Every operation gets a bounded number of generated requests, valid and invalid; every
answer must be documented (status, content type, body schema) and none may be a 5xx.
The shared daemon, with MiniLM loaded, so the routes that use a model do real work when a
generated name happens to match; unknown names fail fast.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from modelctl.testing import MINILM, Daemon

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def log_before(daemon: Daemon) -> int:
    """How much the shared daemon had logged before this module's fuzzing began."""
    return len(daemon.log())


@pytest.fixture(scope="module")
def fuzzed(daemon: Daemon, log_before: int) -> Iterator[Daemon]:
    """The shared daemon with MiniLM loaded; what the fuzzing changed is undone after
    (models it loaded, listeners it opened)."""
    daemon.client.eject(all=True, force=True)
    daemon.client.load_model(MINILM, "cpu")
    yield daemon
    daemon.client.eject(all=True, force=True)
    for url in daemon.client.health()["listeners"]:
        port = int(url.rsplit(":", 1)[1])
        if port != daemon.http_port:
            daemon.client.close_listener(port)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])
def test_generated_requests_get_documented_answers(fuzzed: Daemon,
                                                   mode: GenerationMode) -> None:
    # schemathesis' pytest plugin does not run under pytest 9, so the operations are
    # walked here, each with its own hypothesis run; all failures are reported together.
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")
    failures: dict[str, str] = {}
    operations = 0
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            failures[f"operation {operations}"] = f"invalid in the schema: {result.err()}"
            continue
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS, timeout=60)

        try:
            fuzz()
        except Unsatisfiable:
            # No invalid request exists for an operation without parameters or body.
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        except (Exception, BaseExceptionGroup) as exc:  # collected, reported below
            failures[operation.label] = str(exc)[:3000]
    assert operations >= 14
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


def test_daemon_is_whole_after_fuzzing(fuzzed: Daemon, log_before: int) -> None:
    # Runs after the fuzzing above (file order): the daemon still serves real work.
    assert fuzzed.alive()
    assert len(fuzzed.client.embed(MINILM, ["after the storm"])[0]) == 384
    assert "Traceback" not in fuzzed.log()[log_before:]
