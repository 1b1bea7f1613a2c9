"""State connection strings (crawlsched/dsn.py): accepted forms, the redaction every message uses, ${VAR}."""

from __future__ import annotations

import pytest

from crawlsched.dsn import check_dsn, expand_dsn, redact_dsn, secrets_of
from crawlsched.errors import InvalidValue, MissingVariable


@pytest.mark.parametrize(("dsn", "shown"), [
    ("postgresql://crawlsched@db.internal/crawlsched", "postgresql://crawlsched@db.internal/crawlsched"),
    ("postgresql://crawlsched:hunter2@db.internal/crawlsched", "postgresql://crawlsched@db.internal/crawlsched"),
    ("postgres://u:hunter2@h1:5432,h2:5433/db?sslmode=require", "postgres://u@h1:5432,h2:5433/db?sslmode=require"),
    ("postgresql://u:hunt@er2@db/x", "postgresql://u@db/x"),  # an unencoded @ in the password: still hidden
    ("postgresql://:hunter2@db/x", "postgresql://db/x"),
    ("postgresql://u@db/x?password=hunter2&sslmode=require", "postgresql://u@db/x?sslmode=require"),
    ("postgresql://u@db/x?sslmode=require&password=hunter2", "postgresql://u@db/x?sslmode=require"),
    ("postgresql://u:${PGPASS}@db/x", "postgresql://u@db/x"),
    ("postgresql://${PGUSER}@${PGHOST}/x", "postgresql://${PGUSER}@${PGHOST}/x"),
    ("host=db.internal dbname=crawlsched password=hunter2 user=c", "host=db.internal dbname=crawlsched user=c"),
    ("host=db password = 'hun ter\\'2' dbname=x", "host=db dbname=x"),
    ("host=db PASSWORD=hunter2", "host=db"),
    ("mysql://u:hunter2@db/x", "(a connection string; not shown: its password could not be told apart)"),
])  # fmt: skip
def test_a_password_never_survives_redaction(dsn, shown):
    assert redact_dsn(dsn) == shown
    assert "hunter2" not in redact_dsn(dsn) and "hun ter" not in redact_dsn(dsn)


@pytest.mark.parametrize("dsn", [
    "postgresql://crawlsched@db.internal/crawlsched", "postgres://db/x", "postgresql:///crawlsched",
    "host=/tmp dbname=crawlsched", "host=db port=5432 user='a b'", "postgresql://u:${PGPASS}@db/x",
])  # fmt: skip
def test_postgresql_urls_and_conninfo_are_accepted_as_written(dsn):
    assert check_dsn(dsn) == dsn


@pytest.mark.parametrize(("value", "expect"), [
    ("mysql://u:hunter2@db/x", ["defaults.state", "not shown", "postgresql://", "key=value"]),
    ("/var/lib/crawlsched.db", ["defaults.state", '"/var/lib/crawlsched.db"', "postgresql://"]),
    ("", ["defaults.state", "not empty"]),
    ("postgresql://", ["defaults.state", '"postgresql://"']),
    ("postgresql://u:hunter2@db/x\nhost=evil", ["defaults.state", "one line"]),
    ("postgresql://u@db/${NO-SUCH", ["defaults.state", "${NAME}"]),
    (5432, ["defaults.state", "5432", "postgresql://"]),
])  # fmt: skip
def test_a_bad_state_is_refused_naming_the_field_without_its_password(value, expect):
    with pytest.raises(InvalidValue) as caught:
        check_dsn(value)
    for text in expect:
        assert text in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_variables_expand_only_on_request_and_a_missing_one_is_named():
    dsn = "postgresql://u:${PGPASS}@${PGHOST}/x"
    assert expand_dsn(dsn, {"PGPASS": "s3cret!", "PGHOST": "db"}) == "postgresql://u:s3cret!@db/x"
    with pytest.raises(MissingVariable, match="PGHOST"):
        expand_dsn(dsn, {"PGPASS": "s3cret!"})


def test_the_secrets_of_a_dsn_are_its_passwords_and_expanded_values():
    assert set(secrets_of("postgresql://u:${PGPASS}@db/x?password=qq1", {"PGPASS": "s3cret"})) == {"s3cret", "qq1"}
    assert secrets_of("host=db password='a\\'b'", {}) == ["a\\'b"]
