"""schemathesis against /api/openapi.json: the document says what the API does (bounded to about a minute)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

from crawlsched.daemon import Daemon, DaemonView, InlineExecutor  # noqa: E402
from crawlsched.state import State  # noqa: E402
from crawlsched.store import JobStore  # noqa: E402
from crawlsched.web import create_app  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home: Path = tmp_path_factory.mktemp("schema-home")
    (home / "jobs.toml").write_text('[defaults]\ntimezone = "UTC"\nurl = "http://127.0.0.1:9/"\n\n'
                                    '[[jobs]]\nid = "default"\nname = "default"\nat = "09:00"\n')
    d = Daemon(JobStore(home / "jobs.toml", cache_dir=home / ".cache"), State(home / "crawlsched.db"), home,
               logging.getLogger("crawlsched.test"), executor=InlineExecutor(), notify=lambda _m: False, duties=False)
    d.start()
    yield d
    d.shutdown()


@pytest.fixture(scope="module")
def api_schema(daemon: Daemon):
    # The WSGI client sends "Host: localhost" (port 80): the app is bound there for this test.
    app = create_app(daemon.store, daemon.state, DaemonView(daemon), home=daemon.home, log=daemon.log, token=None, bind_host="127.0.0.1", bind_port=80)
    app.config["CRAWLSCHED_HANDOVER_WAIT"] = 0
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app)


MODES = ["positive", "negative"]


def operations(api_schema) -> list:
    return [result.ok() for result in api_schema.get_all_operations()]


# schemathesis.pytest.from_fixture does not work with pytest 9 (it reads Function._nodeid),
# so each operation runs as a plain hypothesis test inside one pytest test per mode.
@pytest.mark.parametrize("mode", MODES)
def test_api_conforms_to_its_openapi_document(api_schema, mode):
    failures = []
    for operation in operations(api_schema):
        strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

        @given(case=strategy)
        @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            # Schema-valid is not always acceptable: a time zone must exist, a cron expression
            # must fire, an end date must not be past. Those are 422s the schema cannot express.
            case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])

        try:
            check()
        except Unsatisfiable:
            pass  # nothing schema-violating to send (no body, only a path parameter)
        except BaseException as exc:  # noqa: BLE001 -- collect all operations' failures, then report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
