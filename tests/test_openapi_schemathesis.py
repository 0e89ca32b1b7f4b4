"""Issue 15: schemathesis against the live app, from its own `/openapi.json`.

The app runs over a real SqliteStore holding known calls (tests/records_fixture.py), so the filtered listing and
the detail run their SQL for every generated request. Checked: no 5xx, every status code documented, every JSON
body matching its schema. POST /webhook is excluded: a generated body can never carry a valid signature, and that
route is fuzzed with signed bodies in tests/test_http_fuzz.py.

Deterministic (derandomize) and bounded (MAX_EXAMPLES per operation), well under a minute on one core.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from tests.records_fixture import AUTH, make_records_app

MAX_EXAMPLES = 25

_tmp = tempfile.TemporaryDirectory(prefix="wacall-schemathesis-")
app, store = make_records_app(Path(_tmp.name))
schema = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(method="POST", path="/webhook")


@pytest.fixture(scope="module", autouse=True)
def _close_store() -> object:
    yield
    store.close()
    _tmp.cleanup()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_app_keeps_to_its_openapi_document(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers=AUTH,
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
    )


@pytest.mark.parametrize("call_id", ["wacid.IN1", "wacid.OUT1", "wacid.IN2"])
def test_every_seeded_calls_detail_matches_the_schema(call_id: str) -> None:
    """Generated ids are almost never a stored call's, so each stored call's 200 is checked by name."""
    operation = schema["/v1/calls/{call_id}"]["GET"]
    case = schema.make_case(operation=operation, path_parameters={"call_id": call_id})
    response = case.call_and_validate(
        headers=AUTH, checks=[not_a_server_error, status_code_conformance, response_schema_conformance]
    )
    assert response.status_code == 200
    assert response.json()["id"] == call_id


def test_the_seeded_recordings_download_matches_the_schema() -> None:
    operation = schema["/v1/calls/{call_id}/recording"]["GET"]
    case = schema.make_case(operation=operation, path_parameters={"call_id": "wacid.IN1"})
    response = case.call_and_validate(
        headers=AUTH, checks=[not_a_server_error, status_code_conformance, response_schema_conformance]
    )
    assert response.status_code == 200
    assert response.content.startswith(b"OggS")
