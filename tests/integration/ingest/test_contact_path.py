"""A phone in a path (``PUT /v1/contacts/{phone}``): ``+`` and its percent-encoding ``%2B`` name the
same normalised number; anything that is not a phone is a 422, never a different number."""

from __future__ import annotations

import pytest

from tests.integration.ingest.conftest import Ingest

pytestmark = pytest.mark.integration


async def test_plus_and_percent_2b_in_the_path_are_the_same_contact(ingest: Ingest):
    first = await ingest.client.put(
        "/v1/contacts/%2B5511933332222", json={"user_id": "u-a"}, headers=ingest.auth
    )
    assert first.status_code == 200, first.text
    assert first.json() == {"phone": "+5511933332222", "user_id": "u-a"}
    second = await ingest.client.put(
        "/v1/contacts/+5511933332222", json={"user_id": "u-b"}, headers=ingest.auth
    )
    assert second.status_code == 200, second.text
    assert second.json() == {"phone": "+5511933332222", "user_id": "u-b"}
    items = (await ingest.client.get("/v1/contacts", headers=ingest.auth)).json()["items"]
    assert [(c["phone"], c["user_id"]) for c in items] == [("+5511933332222", "u-b")], "one contact, remapped"


@pytest.mark.parametrize("path", ["garbage", "%2Bgarbage", "%252B5511933332222", "5511933332222", "%2B"])
async def test_a_path_that_is_not_an_e164_phone_is_a_422(ingest: Ingest, path: str):
    response = await ingest.client.put(f"/v1/contacts/{path}", json={"user_id": "u-x"}, headers=ingest.auth)
    assert response.status_code == 422, (path, response.text)
    message = response.json()["message"]
    assert "E.164" in message or "not a phone number" in message, message
    items = (await ingest.client.get("/v1/contacts", headers=ingest.auth)).json()["items"]
    assert items == []
