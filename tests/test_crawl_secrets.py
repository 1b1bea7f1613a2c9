"""crawl/secrets.py: ${VAR} expansion, and URLs as messages show them."""

from __future__ import annotations

import pytest

from crawlsched.crawl.secrets import expand_vars, redact_url, scrub
from crawlsched.errors import MissingVariable


def test_expand_vars_fills_braced_names_only_and_a_missing_one_is_a_key_and_value_error():
    assert expand_vars("Bearer ${T}, $HOME ${T}", {"T": "x"}) == "Bearer x, $HOME x"
    with pytest.raises(MissingVariable) as err:
        expand_vars("${NOPE}", {})
    assert err.value.name == "NOPE" and isinstance(err.value, KeyError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("url, shown", [
    ("https://user:pass@host/x?token=abc&page=2", "https://user:***@host/x?token=***&page=2"),
    ("https://user@host/x", "https://user@host/x"),
    ("https://u:${PASS}@${HOST}/x?api_key=${KEY}", "https://u:***@${HOST}/x?api_key=${KEY}"),
    ("http://h/p?a=1#frag", "http://h/p?a=1#frag"),
    ("https://h/a@b", "https://h/a@b"),
], ids=["password-and-token", "user-only", "templates-kept", "plain", "at-in-path"])
def test_redact_url_masks_passwords_and_secret_query_values(url, shown):
    assert redact_url(url) == shown



def test_scrub_blanks_expanded_values_but_not_short_ones():
    assert scrub("GET /a/s3cr3t-value/b failed for s3cr3t", ["s3cr3t-value", "s3cr3t", "ab"]) == \
        "GET /a/***/b failed for ***"
    assert scrub("ab cd", ["ab"]) == "ab cd"
