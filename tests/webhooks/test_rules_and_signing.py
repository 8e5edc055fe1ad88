"""Webhook address rules (SSRF) and Standard Webhooks signing, without any process."""

from __future__ import annotations

import base64
import ipaddress
import json
import uuid
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from shared.settings import Settings
from shared.webhooks import (
    DestinationRefusedError,
    check_addresses,
    check_url,
    parse_allowed_hosts,
    secret_problem,
    sign,
    webhook_id,
)

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OPEN = parse_allowed_hosts("")


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://127.9.9.9:8080/",
        "http://[::1]/",
        "http://10.0.0.5/",
        "http://172.16.3.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata: link-local
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://100.64.0.1/",  # shared address space
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://[::ffff:127.0.0.1]/",  # loopback in IPv6 clothing
    ],
)
def test_a_literal_non_public_address_is_refused_at_submit(url: str) -> None:
    with pytest.raises(DestinationRefusedError, match="not allowed"):
        check_url(url, OPEN)


def test_a_public_address_or_any_name_passes_the_literal_check() -> None:
    assert check_url("https://93.184.215.14/hook", OPEN).port == 443
    # A name is only resolved at delivery: the literal check cannot refuse it.
    assert check_url("http://localhost:9000/x", OPEN).host == "localhost"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://example.com:99999/", "port"),
        ("http:///nohost", "no host"),
    ],
)
def test_malformed_callbacks_are_refused(url: str, why: str) -> None:
    with pytest.raises(DestinationRefusedError, match=why):
        check_url(url, OPEN)


def test_allowed_hosts_open_named_addresses_and_restrict_names() -> None:
    loopback = parse_allowed_hosts("127.0.0.1")
    assert check_url("http://127.0.0.1:8080/hook", loopback).host == "127.0.0.1"
    with pytest.raises(DestinationRefusedError):
        check_url("http://127.0.0.2/", loopback)

    names = parse_allowed_hosts("hooks.example.com, *.partner.test, 10.1.0.0/16")
    assert check_url("https://hooks.example.com/x", names)
    assert check_url("https://a.b.partner.test/x", names)
    assert check_url("http://10.1.2.3/x", names)
    for url in ("https://example.com/", "https://partner.test.evil.com/", "https://1.1.1.1/"):
        with pytest.raises(DestinationRefusedError, match="not in WEBHOOK_ALLOWED_HOSTS"):
            check_url(url, names)


def test_every_resolved_address_must_be_allowed() -> None:
    check_addresses("example.com", [ip("93.184.215.14"), ip("2606:2800:21f:cb07::1")], OPEN)
    # One private answer among public ones refuses the name: a client may connect to any.
    with pytest.raises(DestinationRefusedError, match=r"resolves to 127\.0\.0\.1, a loopback"):
        check_addresses("rebind.example", [ip("93.184.215.14"), ip("127.0.0.1")], OPEN)
    with pytest.raises(DestinationRefusedError, match="link-local"):
        check_addresses("meta.example", [ip("169.254.169.254")], OPEN)
    with pytest.raises(DestinationRefusedError, match="no address"):
        check_addresses("void.example", [], OPEN)
    check_addresses("localhost", [ip("127.0.0.1")], parse_allowed_hosts("127.0.0.0/8"))


def test_allowed_hosts_setting_is_validated_at_start() -> None:
    with pytest.raises(ValueError, match="not a host or network"):
        Settings(_env_file=None, WEBHOOK_ALLOWED_HOSTS="ok.example, bad..name")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("c2VjcmV0", "must start with 'whsec_'"),
        ("whsec_not base64!", "base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes"),
    ],
)
def test_a_malformed_secret_is_refused_at_start(secret: str, why: str) -> None:
    assert why in (secret_problem(secret) or "")
    with pytest.raises(ValueError, match="WEBHOOK_SECRET"):
        Settings(_env_file=None, WEBHOOK_SECRET=secret)  # type: ignore[call-arg]
    assert secret_problem(SECRET) is None


def test_a_signed_delivery_verifies_with_the_standard_webhooks_library() -> None:
    body = json.dumps({"id": "x", "status": "completed"})
    message_id = webhook_id(uuid.uuid4())
    signed = sign(SECRET, message_id=message_id, body=body)
    assert signed.headers["webhook-id"] == message_id
    assert signed.headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(signed.body, signed.headers) == json.loads(body)


def test_the_signature_covers_id_timestamp_and_body() -> None:
    body = '{"status":"completed"}'
    signed = sign(SECRET, message_id="msg_1", body=body, at=datetime.now(UTC))
    # HMAC-SHA256 over "id.timestamp.body", by hand, as the specification writes it.
    import hashlib
    import hmac

    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    content = f"msg_1.{signed.headers['webhook-timestamp']}.{body}".encode()
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    assert signed.headers["webhook-signature"] == f"v1,{expected}"

    verifier = Webhook(SECRET)
    for name, value in (
        ("webhook-id", "msg_2"),
        ("webhook-timestamp", str(int(signed.headers["webhook-timestamp"]) + 1)),
    ):
        with pytest.raises(WebhookVerificationError):
            verifier.verify(signed.body, {**signed.headers, name: value})
    with pytest.raises(WebhookVerificationError):
        verifier.verify(signed.body.replace(b"completed", b"failed"), signed.headers)
    other = "whsec_" + base64.b64encode(b"o" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(signed.body, signed.headers)
