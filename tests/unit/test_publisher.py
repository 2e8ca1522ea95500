"""The gateway's task messages are the ones Celery itself writes (`gateway.publisher`): compared
field by field with what the installed Celery and kombu put on a queue for the same send."""

from __future__ import annotations

import base64
import json
from typing import Any

import fakeredis
import orjson
import pytest
from celery import Celery

from gateway.autopipe import AutoPipeline
from gateway.publisher import BrokerPublisher, task_message
from shared.errors import QueueUnavailable
from shared.tasks import PREDICT_BATCH

KWARGS = {"jobs": [{"id": "j1", "rows": [[1.5, 2, -3e-7]]}], "model": "demo:1"}
VARYING = {"delivery_tag", "reply_to"}  # per message, per app: random in both


def celerys(queue: str) -> dict[str, Any]:
    """What `send_task` (as the gateway called it before) leaves on `queue`, decoded."""
    app = Celery("mlqueue", broker="memory://")
    app.conf.update(task_serializer="json", accept_content=["json"])
    app.send_task(
        PREDICT_BATCH, kwargs=KWARGS, task_id="m1", queue=queue, argsrepr="()",
        kwargsrepr="<1 jobs>", ignore_result=True,
    )  # fmt: skip
    with app.connection_for_write() as connection:
        message: dict[str, Any] = connection.default_channel._get(queue)
    return message


@pytest.mark.parametrize("queue", ["mlqueue", "mlqueue.high"])
def test_a_message_is_what_celery_writes_for_the_same_send(queue: str) -> None:
    theirs = celerys(queue)
    ours = orjson.loads(task_message(PREDICT_BATCH, "m1", KWARGS, "<1 jobs>", queue, "o", "r"))
    # The body: the same protocol-2 triple (kombu's JSON is spaced, ours compact).
    assert json.loads(base64.b64decode(ours.pop("body"))) == json.loads(
        base64.b64decode(theirs.pop("body"))
    )
    assert ours["headers"].pop("origin") == "o"
    theirs["headers"].pop("origin")
    assert ours["properties"]["reply_to"] == "r"
    for varying in VARYING:
        assert ours["properties"].pop(varying) and theirs["properties"].pop(varying)
    assert ours == theirs
    assert ours["properties"]["delivery_info"] == {"exchange": "", "routing_key": queue}


def test_a_trace_context_travels_as_a_header() -> None:
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    ours = orjson.loads(task_message(PREDICT_BATCH, "m", KWARGS, "s", "mlqueue", "o", "r", trace))
    assert ours["headers"]["traceparent"] == trace["traceparent"]


@pytest.mark.anyio
async def test_send_pushes_on_the_queue_list_and_a_broken_broker_is_a_503() -> None:
    redis = fakeredis.FakeAsyncRedis()
    publisher = BrokerPublisher(AutoPipeline(redis))
    await publisher.send(PREDICT_BATCH, "a", KWARGS, "<1 jobs>", "mlqueue")
    await publisher.send(PREDICT_BATCH, "b", KWARGS, "<1 jobs>", "mlqueue")
    # Consumers pop from the right: the first sent is the first taken.
    taken = [orjson.loads(m)["headers"]["id"] for m in await redis.lrange("mlqueue", 0, -1)]
    assert taken[::-1] == ["a", "b"]
    await redis.aclose()
    broken = BrokerPublisher(AutoPipeline(fakeredis.FakeAsyncRedis(connected=False)))
    with pytest.raises(QueueUnavailable):
        await broken.send(PREDICT_BATCH, "c", KWARGS, "<1 jobs>", "mlqueue")
