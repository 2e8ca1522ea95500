"""Sentinel settings, the clients and Celery URLs built from them, and the replica wait."""

from __future__ import annotations

from typing import Any

import pytest
import redis.sentinel
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from shared.celery_app import create_celery
from shared.errors import NotReplicated, QueueUnavailable
from shared.redis_clients import MasterConnection, celery_redis, sync_redis
from shared.replication import ReplicaWait, redis_is_away
from shared.settings import Settings

SENTINELS = "10.0.0.1:26379, s2:26380,s3:26381"


def test_sentinels_are_read_from_a_comma_separated_list() -> None:
    settings = Settings(redis_sentinels=SENTINELS)  # type: ignore[arg-type]
    assert settings.redis_sentinels == ["10.0.0.1:26379", "s2:26380", "s3:26381"]


@pytest.mark.parametrize("bad", ["s1", "s1:", "s1:0", "s1:http", ":26379"])
def test_a_sentinel_without_host_and_port_is_refused_by_position(bad: str) -> None:
    with pytest.raises(ValidationError, match=rf"redis_sentinels entry 1 \({bad!r}\)"):
        Settings(redis_sentinels=f"ok:1,{bad}")  # type: ignore[arg-type]


def test_one_redis_keeps_its_url_for_celery() -> None:
    settings = Settings(redis_url="redis://:pw@h:6380/2")  # type: ignore[arg-type]
    urls = celery_redis(settings)
    assert (urls.broker_url, urls.backend_url) == ("redis://:pw@h:6380/2", "redis://:pw@h:6380/2")
    assert urls.broker_options == {} and urls.broker_ssl is None


def test_sentinels_give_celery_a_sentinel_url_per_node_with_password_and_db() -> None:
    settings = Settings(
        redis_url="redis://:p%40ss@ignored:1/3",  # type: ignore[arg-type]
        redis_sentinels=SENTINELS,  # type: ignore[arg-type]
        redis_master_name="jobs",
        redis_sentinel_password="sentinel-secret",  # type: ignore[arg-type]
    )
    urls = celery_redis(settings)
    assert urls.broker_url == (
        "sentinel://:p%40ss@10.0.0.1:26379/3;sentinel://:p%40ss@s2:26380/3;"
        "sentinel://:p%40ss@s3:26381/3"
    )
    assert urls.backend_url == urls.broker_url
    expected = {
        "master_name": "jobs",
        "sentinel_kwargs": {"password": "sentinel-secret"},
        "socket_connect_timeout": settings.redis_timeout,
        "socket_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 2,
    }
    assert urls.broker_options == urls.backend_options == expected
    conf = create_celery(settings).conf
    assert conf.broker_url == urls.broker_url
    assert conf.broker_transport_options["master_name"] == "jobs"
    # A master gone with its host closes nothing: no wait on it may be unbounded.
    assert conf.broker_transport_options["socket_connect_timeout"] == settings.redis_timeout
    assert conf.redis_socket_connect_timeout == settings.redis_timeout
    assert conf.redis_socket_timeout == 5.0
    assert conf.broker_transport_options["visibility_timeout"] == settings.visibility_timeout
    assert conf.result_backend_transport_options["master_name"] == "jobs"


def test_tls_to_the_master_travels_to_celery_as_ssl_options() -> None:
    settings = Settings(
        redis_url="rediss://:pw@x:1/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem",  # type: ignore[arg-type]
        redis_sentinels="s1:26379",  # type: ignore[arg-type]
    )
    urls = celery_redis(settings)
    assert urls.broker_ssl == {"ssl_cert_reqs": "required", "ssl_ca_certs": "/ca.pem"}
    conf = create_celery(settings).conf
    assert conf.broker_use_ssl == urls.broker_ssl


def test_the_sync_client_asks_the_sentinels_for_the_named_master() -> None:
    settings = Settings(
        redis_url="redis://:pw@ignored:1/4",  # type: ignore[arg-type]
        redis_sentinels=SENTINELS,  # type: ignore[arg-type]
        redis_master_name="jobs",
        redis_sentinel_password="sp",  # type: ignore[arg-type]
    )
    client = sync_redis(settings, socket_timeout=3)
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "jobs"
    assert pool.connection_class is MasterConnection
    assert pool.connection_kwargs["password"] == "pw" and pool.connection_kwargs["db"] == 4
    manager: Any = pool.sentinel_manager
    assert [(c.connection_pool.connection_kwargs["host"]) for c in manager.sentinels] == [
        "10.0.0.1",
        "s2",
        "s3",
    ]
    sentinel_kwargs = manager.sentinels[0].connection_pool.connection_kwargs
    assert sentinel_kwargs["password"] == "sp" and sentinel_kwargs["socket_timeout"] == 3


def test_the_replica_wait_is_off_on_one_redis_and_when_disabled() -> None:
    assert ReplicaWait.of(Settings()) is None
    assert ReplicaWait.of(Settings(redis_sentinels="s:1", replica_wait=False)) is None  # type: ignore[arg-type]
    wait = ReplicaWait.of(Settings(redis_sentinels="s:1", replica_wait_timeout=0.25))  # type: ignore[arg-type]
    assert wait == ReplicaWait(1, 250)


def test_no_replica_in_time_is_a_503_kind_of_error() -> None:
    wait = ReplicaWait(1, 250)
    wait.check(1, "job x")  # one replica: fine
    with pytest.raises(NotReplicated, match="job x: no Redis replica confirmed") as caught:
        wait.check(0, "job x")
    assert isinstance(caught.value, QueueUnavailable)


@pytest.mark.parametrize(
    ("exc", "away"),
    [
        (RedisConnectionError("gone"), True),
        (NotReplicated("no replica"), True),
        (NoScriptError("No matching script"), True),
        (
            ResponseError("Command # 1 (EVALSHA ab 2...) of pipeline caused error: NOREPLICAS x"),
            True,
        ),
        (ResponseError("READONLY You can't write against a read only replica."), True),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False),
        (ValueError("boom"), False),
    ],
)
def test_what_counts_as_redis_being_away(exc: Exception, away: bool) -> None:
    assert redis_is_away(exc) is away


def test_a_master_refusing_writes_for_want_of_a_replica_is_a_lost_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise ResponseError("NOREPLICAS Not enough good replicas to write.")

    monkeypatch.setattr(redis.sentinel.SentinelManagedConnection, "read_response", refuse)
    disconnected: list[bool] = []
    monkeypatch.setattr(MasterConnection, "disconnect", lambda self: disconnected.append(True))
    connection = MasterConnection.__new__(MasterConnection)
    with pytest.raises(RedisConnectionError, match="no writes without a replica"):
        connection.read_response()
    assert disconnected == [True]


def test_the_replica_wait_must_end_before_the_socket_timeout() -> None:
    with pytest.raises(ValidationError, match="replica_wait_timeout < redis_timeout"):
        Settings(redis_sentinels="s:1", replica_wait_timeout=2, redis_timeout=2)  # type: ignore[arg-type]
    Settings(redis_sentinels="s:1", replica_wait=False, replica_wait_timeout=2, redis_timeout=2)  # type: ignore[arg-type]


def test_a_time_limit_striking_while_waiting_for_redis_hands_the_message_back() -> None:
    from celery.exceptions import Reject, SoftTimeLimitExceeded

    from worker.failures import classify, hand_back
    from worker.requeue import requeue_if_redis_is_away

    def limit_during_retry() -> None:
        try:
            raise RedisConnectionError("The previous master is now a slave")
        except RedisConnectionError:
            raise SoftTimeLimitExceeded() from None  # as from redis-py's backoff sleep

    with pytest.raises(SoftTimeLimitExceeded) as caught:
        limit_during_retry()
    assert hand_back(caught.value) and classify(caught.value).retryable
    with pytest.raises(Reject), requeue_if_redis_is_away():
        limit_during_retry()
    # A time limit while the task itself was working still fails the job.
    assert not hand_back(SoftTimeLimitExceeded())
    assert not classify(SoftTimeLimitExceeded()).retryable
