"""Thousands of random and mutated bodies at every webhook endpoint: never a 5xx.

Bodies are signed with the source's real secret, so they pass verification and reach the parser,
the normaliser and the database; a share is sent unsigned or with broken headers too.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.ingest.conftest import Ingest, example, signed_headers

pytestmark = pytest.mark.integration

SEEDS = {
    "meta": [
        "meta-webhooks/meta-openapi__inbound_text.json",
        "meta-webhooks/meta-openapi__inbound_image.json",
        "meta-webhooks/meta-openapi__inbound_interactive_list_reply.json",
        "meta-webhooks/pywa__status_failed.json",
    ],
    "chatwoot": [
        "chatwoot/examples/webhook_message_created_incoming_audio.constructed.json",
        "chatwoot/examples/webhook_conversation_status_changed.constructed.json",
    ],
    "evolution": [
        "evolution-api/examples/webhook_messages_upsert_text.constructed.json",
        "evolution-api/examples/webhook_messages_upsert_voice_note.constructed.json",
        "evolution-api/examples/webhook_messages_update_read.constructed.json",
    ],
    "waha": [
        "waha/examples/webhook_message.constructed.json",
        "waha/examples/webhook_message_voice.constructed.json",
        "waha/examples/webhook_message_ack.constructed.json",
    ],
}
PROVIDERS = list(SEEDS)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(
        ["+5511999998888", "5511999998888@c.us", "x@lid", "SERVER_ACK", "read", "image", "1e400"]
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


def replace(value: Any, path: tuple, new: Any, delete: bool) -> Any:
    if not path:
        return new
    parent = value
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return value


@st.composite
def mutated(draw: st.DrawFn, provider: str) -> bytes:
    body = copy.deepcopy(example(draw(st.sampled_from(SEEDS[provider]))))
    for _ in range(draw(st.integers(1, 4))):
        candidates = paths(body)
        path = draw(st.sampled_from(candidates))
        body = replace(body, path, draw(json_values), delete=bool(path) and draw(st.booleans()))
    return json.dumps(body).encode()


bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
)
fuzz = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    derandomize=False,
)


async def send(ingest: Ingest, provider: str, body: bytes, how: str) -> None:
    headers = signed_headers(provider, body)
    if how == "unsigned":
        headers = {"Content-Type": "application/json"}
    elif how == "garbled":
        headers = {k: v[::-1] for k, v in headers.items()}
    response = await ingest.client.post(await ingest.url(provider), content=body, headers=headers)
    assert response.status_code < 500, (provider, body[:200], response.text)
    assert response.status_code in (200, 400, 401, 413), response.text
    if how == "signed" and response.status_code == 200:
        assert response.json()["status"] in ("accepted", "unrecognised", "duplicate")


@pytest.mark.parametrize("provider", PROVIDERS)
@fuzz
@given(data=st.data())
async def test_mutated_provider_payloads_never_cause_a_5xx(
    ingest: Ingest, provider: str, data: st.DataObject
):
    body = data.draw(mutated(provider))
    await send(ingest, provider, body, data.draw(st.sampled_from(["signed", "signed", "signed", "unsigned"])))


@pytest.mark.parametrize("provider", PROVIDERS)
@settings(fuzz, max_examples=200)
@given(body=bodies, how=st.sampled_from(["signed", "signed", "unsigned", "garbled"]))
async def test_random_bodies_never_cause_a_5xx(ingest: Ingest, provider: str, body: bytes, how: str):
    await send(ingest, provider, body, how)
