"""The cached-key signer must produce botocore's exact Authorization header (DESIGN.md §11)."""

from __future__ import annotations

import datetime
from unittest import mock

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotocoreCredentials

from gateway.store.sigv4 import CONTENT_TYPE, Credentials, SigV4Signer, host_header
from tests.fakes import FakeClock

FROZEN = datetime.datetime(2024, 5, 6, 23, 59, 58, 654321, tzinfo=datetime.timezone.utc)
BODY = b'{"TableName":"features","Key":{"pk":{"S":"u1"}},"ProjectionExpression":"#p0","ExpressionAttributeNames":{"#p0":"_ts"}}'
TARGET = "DynamoDB_20120810.GetItem"
TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+example/token=="


def botocore_headers(url: str, credentials: BotocoreCredentials, region: str, body: bytes = BODY) -> dict[str, str]:
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET}
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=FROZEN):
        SigV4Auth(credentials, "dynamodb", region).add_auth(request)
    return dict(request.headers)


@pytest.mark.parametrize("token", [None, TOKEN], ids=["long-term", "session-token"])
@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://dynamodb.eu-west-1.amazonaws.com/", "eu-west-1"),
        ("http://127.0.0.1:8000/", "us-east-1"),
        ("https://dynamodb.us-east-1.amazonaws.com:443/", "us-east-1"),
    ],
)
def test_authorization_matches_botocore(url: str, region: str, token: str | None) -> None:
    expected = botocore_headers(url, BotocoreCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCY", token), region)
    signer = SigV4Signer(url, region, clock=lambda: FROZEN.timestamp())

    headers = signer.sign(TARGET, BODY, Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCY", token))

    assert headers["Authorization"] == expected["Authorization"]
    assert headers["X-Amz-Date"] == expected["X-Amz-Date"] == "20240506T235958Z"
    assert headers.get("X-Amz-Security-Token") == expected.get("X-Amz-Security-Token")
    assert headers["Host"] == host_header(url)
    assert headers["Content-Type"] == CONTENT_TYPE and headers["X-Amz-Target"] == TARGET


@pytest.mark.parametrize("token", [None, TOKEN], ids=["long-term", "session-token"])
def test_authorization_matches_a_real_botocore_client_request(token: str | None) -> None:
    """Same body, target and second as what botocore's DynamoDB client actually sends: same header."""
    sent: dict[str, object] = {}

    class Captured(Exception):
        pass

    def capture(request: AWSRequest, **_: object) -> None:
        sent.update(headers=dict(request.headers), body=request.body, url=request.url)
        raise Captured

    client = botocore.session.get_session().create_client(
        "dynamodb",
        region_name="ap-southeast-2",
        endpoint_url="http://127.0.0.1:8000",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret/with+chars",
        aws_session_token=token,
    )
    client.meta.events.register("before-send.dynamodb", capture)
    with mock.patch("botocore.auth.get_current_datetime", return_value=FROZEN), pytest.raises(Captured):
        client.get_item(TableName="features", Key={"pk": {"S": "ü1"}})
    client.close()

    signer = SigV4Signer(str(sent["url"]), "ap-southeast-2", clock=lambda: FROZEN.timestamp())
    headers = signer.sign(TARGET, sent["body"], Credentials("AKIDEXAMPLE", "secret/with+chars", token))  # type: ignore[arg-type]

    sent_headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in sent["headers"].items()}  # type: ignore[union-attr]
    assert headers["Authorization"] == sent_headers["Authorization"]
    assert headers["X-Amz-Date"] == sent_headers["X-Amz-Date"]


def test_signing_key_is_reused_within_a_day_and_rederived_on_the_next() -> None:
    clock = FakeClock(datetime.datetime(2024, 5, 6, 0, 0, 1, tzinfo=datetime.timezone.utc).timestamp())
    signer = SigV4Signer("https://dynamodb.us-east-1.amazonaws.com", "us-east-1", clock=clock)
    credentials = Credentials("AKIDEXAMPLE", "secret")

    first = signer.sign(TARGET, BODY, credentials)
    clock.advance(86_000)  # 23:53:21, same UTC day
    second = signer.sign(TARGET, BODY, credentials)
    assert signer.derivations == 1
    assert "20240506/us-east-1/dynamodb/aws4_request" in second["Authorization"]
    assert first["Authorization"] != second["Authorization"]  # new timestamp, same key

    clock.advance(600)  # 00:03:21 the next day
    third = signer.sign(TARGET, BODY, credentials)
    assert signer.derivations == 2
    assert "20240507/us-east-1/dynamodb/aws4_request" in third["Authorization"]

    # Still exactly botocore's header after the day changed.
    frozen = clock.datetime()
    request = AWSRequest(
        method="POST",
        url="https://dynamodb.us-east-1.amazonaws.com/",
        data=BODY,
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET},
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=frozen):
        SigV4Auth(BotocoreCredentials("AKIDEXAMPLE", "secret"), "dynamodb", "us-east-1").add_auth(request)
    assert third["Authorization"] == request.headers["Authorization"]


def test_rotated_secret_gets_its_own_key() -> None:
    signer = SigV4Signer("https://dynamodb.us-east-1.amazonaws.com", "us-east-1", clock=lambda: FROZEN.timestamp())
    old = signer.sign(TARGET, BODY, Credentials("AKID1", "old-secret"))
    new = signer.sign(TARGET, BODY, Credentials("AKID2", "new-secret"))
    assert signer.derivations == 2
    assert old["Authorization"] != new["Authorization"]
    assert signer.sign(TARGET, BODY, Credentials("AKID1", "old-secret")) == old
    assert signer.derivations == 2
