"""connectors/base.py: the shared Retry-After parsing, status classification and config types of every connector."""

from __future__ import annotations

import datetime as dt
from email.utils import format_datetime

import httpx
import pytest
from pydantic import ValidationError

from connectors import REGISTRY
from connectors.base import CredentialsError, RejectedError, RetryableError, error_for_response, parse_retry_after
from connectors.github import GitHubConnectorConfig
from connectors.scim import ScimConnectorConfig


def answer(status: int = 429, retry_after: str | None = None) -> httpx.Response:
    return httpx.Response(status, headers={} if retry_after is None else {"Retry-After": retry_after})


def test_retry_after_seconds_and_absent() -> None:
    assert parse_retry_after(answer(retry_after=" 30 ")) == 30.0
    assert parse_retry_after(answer()) is None
    assert parse_retry_after(answer(retry_after="soon")) is None


def test_retry_after_http_date() -> None:
    """RFC 9110 §10.2.3: an HTTP-date is seconds from now; a past one (or "-0000", naive) is never negative."""
    future = format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120), usegmt=True)
    seconds = parse_retry_after(answer(retry_after=future))
    assert seconds is not None and 110 <= seconds <= 120
    assert parse_retry_after(answer(retry_after="Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0
    assert parse_retry_after(answer(retry_after="Wed, 21 Oct 2015 07:28:00 -0000")) == 0.0


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (408, RetryableError),
        (429, RetryableError),
        (500, RetryableError),
        (401, CredentialsError),
        (400, RejectedError),
    ],
)
def test_error_for_response(status: int, error: type[Exception]) -> None:
    mapped = error_for_response(answer(status, "5"), doing="d")
    assert type(mapped) is error
    assert mapped.detail.startswith(f"d: HTTP {status}")
    if isinstance(mapped, RetryableError):
        assert mapped.retry_after == 5.0


def test_kind_is_a_class_constant_everywhere() -> None:
    """Every registered config names its kind as a class constant equal to its registry key, never a field."""
    for kind, config in REGISTRY.items():
        assert config.kind == kind
        assert "kind" not in config.model_fields


@pytest.mark.parametrize(
    ("given", "names"),
    [
        ("eng, ops,", {"eng", "ops"}),
        ('["Sales, EMEA", "eng"]', {"Sales, EMEA", "eng"}),
        ("", set()),
        (["eng"], {"eng"}),
    ],
)
def test_name_sets_from_set_strings(given: object, names: set[str]) -> None:
    """``--set managed_groups=a,b`` (or a JSON list) validates, and the stored JSON form loads back the same."""
    config = ScimConnectorConfig.model_validate(
        {"base_url": "https://app.example/scim/v2", "token": "t", "managed_groups": given}
    )
    assert config.managed_groups == frozenset(names)
    stored = config.model_dump(mode="json") | {"token": "t"}
    assert ScimConnectorConfig.model_validate(stored) == config


def test_name_set_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="managed_teams"):
        GitHubConnectorConfig.model_validate({"org": "acme", "token": "t", "managed_teams": "[not json"})
