"""The one configuration object of mlqueue, read from `MLQUEUE_*` environment variables."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class RateLimit(BaseModel):
    """One API key's budget: token buckets refilled at `*_per_second`, holding `*_burst` tokens
    (0: one second's worth). A rate of 0 means no limit on that count."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jobs_per_second: float = Field(0.0, ge=0)
    jobs_burst: float = Field(0.0, ge=0)
    rows_per_second: float = Field(0.0, ge=0)
    rows_burst: float = Field(0.0, ge=0)

    @property
    def enabled(self) -> bool:
        """Whether any bucket limits anything."""
        return self.jobs_per_second > 0 or self.rows_per_second > 0

    def jobs_burst_size(self) -> float:
        """The jobs bucket's capacity."""
        return self.jobs_burst or max(1.0, self.jobs_per_second)

    def rows_burst_size(self) -> float:
        """The rows bucket's capacity."""
        return self.rows_burst or max(1.0, self.rows_per_second)


class Settings(BaseSettings):
    """Every knob of the gateway and the worker; nothing else reads the environment."""

    model_config = SettingsConfigDict(
        env_prefix="MLQUEUE_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # --- Redis and Celery ---------------------------------------------------------------
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    """Broker, result backend and job store (one URL is all a direct enqueuer needs).
    `rediss://` and passwords work; the URL is a secret so it never lands in logs."""
    result_backend_url: SecretStr | None = None
    """Celery result backend; defaults to `redis_url`."""
    visibility_timeout: int = Field(12, ge=1)
    """Seconds before Redis redelivers an unacknowledged message (e.g. after a whole worker died).
    Must exceed the longest task (`task_time_limit`), or a slow task runs twice; it also bounds
    how long the jobs of a dead worker wait (about this plus `unacked_restore_interval`)."""
    unacked_restore_interval: float = Field(1.0, gt=0)
    """Seconds between a worker's sweeps for messages whose visibility timeout has passed."""
    task_soft_time_limit: int = Field(8, ge=1)
    """Seconds before a running prediction is asked to stop (it then fails cleanly)."""
    task_time_limit: int = Field(10, ge=1)
    """Seconds before a running prediction's process is killed."""
    max_attempts: int = Field(3, ge=1)
    """Times a job (or a CSV chunk) is started before it fails with `TooManyAttempts`: a worker
    or Redis that fails while storing its outcome gets it redelivered or re-sent (see
    reliability), but never endlessly."""
    result_ttl: int = Field(86_400, ge=60)
    """Seconds that job records, results and Celery results are kept (explicit TTL everywhere)."""

    redis_sentinels: Annotated[list[str], NoDecode] = []
    """Redis Sentinel addresses, comma-separated `host:port`. Set: every client (job store, pub/sub,
    Celery broker and result backend) asks these sentinels for the current master and follows a
    failover without a restart; `redis_url` then only gives the password, database and scheme
    (`rediss://` for TLS) of the master, its host and port are ignored. Empty: one Redis."""
    redis_master_name: str = "mymaster"
    """The name the sentinels monitor the master under (`sentinel monitor NAME ...`)."""
    redis_sentinel_password: SecretStr | None = None
    """Password of the sentinels themselves (`requirepass` in sentinel.conf), if they have one;
    the master's password stays in `redis_url`."""
    redis_sentinel_tls: bool = False
    """Speak TLS to the sentinels too (with the CA and verification of `redis_url`'s
    `ssl_ca_certs` / `ssl_cert_reqs` parameters)."""
    replica_wait: bool = True
    """With sentinels: accept a job (202, or a `/predict` answer), count a CSV chunk as received
    and acknowledge a worker's message only once its writes are on at least one replica
    (`WAIT 1`), so that a failover cannot lose them. Off only to measure what it prevents."""
    replica_wait_timeout: float = Field(1.0, gt=0)
    """Seconds to wait for a replica's confirmation; past it the job is refused with a 503
    (and its record removed) or the worker's message is handed back. Below `redis_timeout`."""

    local_redis_port: int = Field(6379, ge=1, le=65535)
    """Port of the Redis that `make run` starts when `redis_url` is unset (if taken, a free one)."""

    # --- Micro-batching ---------------------------------------------------------------
    batch_max_rows: int = Field(2000, ge=1)
    """Most rows the gateway puts into one broker message (several small jobs coalesced)."""
    batch_max_wait_ms: float = Field(2.0, ge=0)
    """How long a batch may wait for more jobs while the gateway is busy; an idle gateway sends
    at once, so this bounds the latency that batching adds."""
    direct_batch_max: int = Field(64, ge=1)
    """Most `mlqueue.predict` tasks, sent directly to Celery, that a worker runs as one batch
    (one model call and one round trip per store, each task keeping its own result). 64, as in
    adaptive-batching model servers: past it the per-batch cost is already a few per cent of
    the per-task cost, and a worker reserves up to this many times (concurrency + 1) messages
    (of direct tasks, and as many of the gateway's micro-batches, `worker.batch_strategy`)."""
    direct_batch_wait_ms: float = Field(2.0, ge=0)
    """How long a worker holds the first direct task of a batch for more to arrive while no batch
    runs (while one runs, the next grows until it ends): the latency batching adds at low load,
    as long as the gateway's micro-batcher waits."""
    fast_predict: bool = True
    """Predict single-output forests with the compiled walk of `worker.forest_kernel` (identical
    output; ~1.8x less CPU per row, ~150x less per one-row call than scikit-learn's `predict`)."""

    # --- Worker -------------------------------------------------------------------------
    worker_concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    """Prefork child processes per worker; one per core serves CPU-bound models best."""
    blas_threads: int = Field(1, ge=1)
    """BLAS/OpenMP threads per worker process (capped so prefork children do not oversubscribe)."""
    heartbeat_interval: float = Field(2.0, gt=0)
    """Seconds between a worker's liveness beats in Redis (read by `/readyz`)."""

    # --- Models -------------------------------------------------------------------------
    model_dir: Path = Path("models")
    """Model registry root: `<name>/<version>/model.skops` (or `model.joblib`) plus
    `manifest.json`. Workers write uploaded versions here (they need it writable and, across
    hosts, shared); gateways only read it."""
    default_model: str = "demo"
    """The model that `"default"` names (through its `production` alias when it has one)."""
    max_loaded_models: int = Field(8, ge=0)
    """Model versions each worker process keeps loaded; past it the least recently used one is
    dropped (and loaded again, verified, when a job needs it). 0: no limit."""
    max_loaded_model_bytes: int = Field(0, ge=0)
    """Artifact bytes each worker process keeps loaded (the files' sizes, a rough measure of the
    memory they take); past it the least recently used versions are dropped, but never the one a
    job is using. 0: no limit."""
    max_model_bytes: int = Field(256 * 1024**2, ge=1024, le=512 * 1024**2)
    """Largest model file `POST /v1/models/{name}/versions` accepts; larger is a 413. The file
    waits in Redis (at most 512 MiB, Redis' limit for one value) until a worker vets it."""
    allow_pickle_uploads: bool = False
    """Accept joblib/pickle model uploads as well as skops files. A pickle runs code when it is
    loaded, so only turn this on when every admin key holder may run code on the workers; set
    it alike on gateways and workers (each checks it)."""

    # --- Gateway ------------------------------------------------------------------------
    host: str = "127.0.0.1"
    """Interface the gateway binds."""
    port: int = Field(8000, ge=1, le=65535)
    """Port the gateway listens on."""
    gateway_workers: int = Field(default_factory=lambda: min(2, os.cpu_count() or 1), ge=1)
    """Gateway processes, sharing one listening socket with their connections kept level (none
    holds more than one above the least busy). With many small jobs the gateway
    saturates first (two HTTP requests per job), so two by default where there are two cores."""
    max_rows_per_job: int = Field(10_000, ge=1)
    """Rows one JSON job (or `/predict_csv` file) may carry."""
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    """Largest JSON request body; larger is a 413."""
    max_upload_bytes: int = Field(4 * 1024**3, ge=1024)
    """Largest CSV upload (default 4 GiB: a 2 GB file fits with room); larger is a 413 without
    reading the rest. The gateway streams uploads, so this bounds Redis and time, not its memory."""
    max_wait_seconds: float = Field(30.0, ge=0)
    """Upper bound of `?wait=` long polls."""
    sync_timeout: float = Field(30.0, gt=0)
    """How long the article's synchronous `/predict` façade waits for its job."""
    redis_timeout: float = Field(2.0, gt=0)
    """Socket timeout for the gateway's Redis calls: past it the gateway answers 503."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of gateway and worker."""

    # --- Bulk CSV -----------------------------------------------------------------------
    csv_chunk_rows: int = Field(25_000, ge=1)
    """Rows per chunk of an uploaded CSV: each chunk is stored in Redis and scored by one task.
    Smaller chunks keep every worker busy sooner and to the end of a file, at a fixed cost each:
    1M rows took 7 % less time end to end in chunks of 25,000 rows than of 50,000, and more
    with 12,500 (the 2-core box, `make bench-csv`)."""
    csv_max_pending_chunks: int = Field(16, ge=1)
    """Chunks of one upload stored but not yet scored before the gateway stops reading the upload
    until workers catch up; bounds the Redis memory a big file takes and lets other jobs in."""
    upload_idle_timeout: float = Field(30.0, gt=0)
    """Seconds an upload may send nothing before it is abandoned: the client gets a 408, the job
    fails (`UploadStalled`) and its stored chunks are deleted, so a silent client holds no slot."""

    # --- Observability ------------------------------------------------------------------
    metrics_dir: Path | None = None
    """Where a worker's prefork children write Prometheus metrics for the main process to add up
    (`PROMETHEUS_MULTIPROC_DIR`); emptied at worker start. Unset: a fresh temporary directory."""
    worker_metrics_port: int = Field(9808, ge=0, le=65535)
    """Port of the worker main process's Prometheus endpoint (children summed); 0: off."""
    worker_metrics_host: str = "127.0.0.1"
    """Interface the worker's Prometheus endpoint binds (`0.0.0.0` to be scraped from elsewhere)."""

    # --- Reliability and security -------------------------------------------------------
    api_keys: Annotated[list[str], NoDecode] = []
    """SHA-256 hex digests of the accepted API keys (`python -m gateway.keys` makes a pair).
    Empty: no authentication (local use). Set: every `/v1` route and `/predict*` need
    `Authorization: Bearer <key>`. From the environment either a JSON list or comma-separated."""
    admin_keys: Annotated[list[str], NoDecode] = []
    """SHA-256 hex digests of admin API keys (same format as `api_keys`; they need not be listed
    there too). An admin key is also accepted everywhere and sees ownerless jobs: those enqueued
    directly through Celery or created before keys were turned on, which other keys cannot see."""
    metrics_public: bool = False
    """Whether `/metrics` is served without an API key when keys are configured."""
    max_queue_depth: int = Field(10_000, ge=1)
    """Messages waiting in the queue above which new jobs get 503 with `Retry-After`."""
    max_uploads_per_key: int = Field(4, ge=1)
    """CSV uploads one API key may have in progress at once; one more is a 429 with
    `Retry-After`. Each upload may hold `csv_max_pending_chunks` chunks in Redis."""
    max_long_polls_per_key: int = Field(64, ge=1)
    """Requests one API key may have waiting at once (`?wait=` long polls and the synchronous
    `/predict` façade); one more is a 429, so that one key cannot take every connection."""
    max_stored_bytes_per_key: int = Field(2 * 1024**3, ge=1024)
    """Result bytes one API key may have stored over `result_ttl` (24 bytes per prediction,
    counted when its job is accepted); past it new jobs are a 429 until old ones expire."""
    max_waiting_chunk_bytes: int = Field(1024**3, ge=1024)
    """Bytes of CSV chunks stored in Redis and not yet scored, all keys together; past it an
    upload (new, or one going on) is a 503 with `Retry-After` so that Redis keeps room."""

    # --- Job API (issue 14) ---------------------------------------------------------------
    idempotency_ttl: int = Field(86_400, ge=60)
    """Seconds an `Idempotency-Key` stays bound to the job it created (per API key); a retry
    with the same key and body within it gets the original 202 again instead of a second job."""
    rate_limit_jobs_per_second: float = Field(0.0, ge=0)
    """Jobs each API key may submit per second (a token bucket in Redis shared by every gateway
    process); over it a submit gets 429 with `Retry-After`. 0: no limit (the default)."""
    rate_limit_jobs_burst: float = Field(0.0, ge=0)
    """Jobs a key may submit at once before the per-second rate applies; 0: one second's worth."""
    rate_limit_rows_per_second: float = Field(0.0, ge=0)
    """Rows each API key may submit per second (JSON rows at submit: 429 over it; a CSV upload is
    slowed down to it chunk by chunk instead). 0: no limit (the default)."""
    rate_limit_rows_burst: float = Field(0.0, ge=0)
    """Rows a key may submit at once before the per-second rate applies; 0: one second's worth.
    A job with more rows than this waits for a full bucket."""
    max_event_streams_per_key: int = Field(16, ge=1)
    """Open `GET /v1/jobs/{id}/events` streams one API key may hold, all gateway processes
    together; one more is a 429 (a stream holds a connection for as long as its job runs)."""
    events_poll_seconds: float = Field(0.5, gt=0)
    """How often an event stream re-reads its job between wakeups (progress and the start of a
    job are not published; the end is, and is sent at once)."""
    events_heartbeat_seconds: float = Field(15.0, gt=0)
    """Seconds between comment lines on an idle event stream, so that proxies keep it open."""
    events_max_seconds: float = Field(3600.0, gt=0)
    """Longest life of one event stream; the client reconnects with `Last-Event-ID`."""
    webhook_secret: SecretStr | None = None
    """Key of the `Mlqueue-Signature` HMAC on completion webhooks; unset: `callback_url` is
    refused (422), since an unsigned callback cannot be trusted by its receiver."""
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = []
    """Callback hosts allowed although they resolve to loopback, private or link-local
    addresses (JSON list or comma-separated), e.g. an internal receiver; all others are refused."""
    webhook_max_attempts: int = Field(10, ge=1)
    """Deliveries tried per webhook before it is given up (state `failed`)."""
    webhook_backoff_seconds: float = Field(30.0, gt=0)
    """Wait before the second attempt; doubled after each failure, +/- 20 % jitter (10 attempts
    from 30 s span about 4 h)."""
    webhook_threads: int = Field(8, ge=1)
    """Threads per worker process that make webhook deliveries: a slow receiver holds one of
    them, never the process's next prediction."""
    webhook_timeout: float = Field(5.0, gt=0)
    """Seconds a receiver has to answer one delivery."""
    public_url: str = Field("", pattern=r"^(https?://[^\s/?#]+(/[^\s?#]*)?)?$")
    """The gateway's address as clients reach it (e.g. `https://mlqueue.example.com`): webhook
    payloads then carry an absolute `result_url`; empty, the path alone (relative to the
    gateway the job was submitted to)."""
    webhook_max_data_bytes: int = Field(65_536, ge=0)
    """A JSON job's predictions ride in its webhook (`data`) while their JSON is at most this
    long; larger ones are fetched from `result_url`."""
    rate_limit_overrides: dict[str, RateLimit] = {}
    """Per-key limits replacing the four above, as JSON: the key's owner id (the first 16 hex
    digits of its digest in `api_keys`) -> `{"jobs_per_second", "jobs_burst",
    "rows_per_second", "rows_burst"}`; e.g. `{"0123456789abcdef": {"jobs_per_second": 1000}}`."""

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _parse_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            value = orjson.loads(text) if text.startswith("[") else text.split(",")
        if isinstance(value, list):
            return [str(v).strip().lower() for v in value if str(v).strip()]
        return value

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _parse_digests(cls, value: object, info: ValidationInfo) -> object:
        name = str(info.field_name)
        if isinstance(value, str):
            if value == "":  # set but empty (`MLQUEUE_API_KEYS=` in an env file): off
                return []
            text = value.strip()
            try:
                value = orjson.loads(text) if text.startswith("[") else text.split(",")
            except orjson.JSONDecodeError:
                raise ValueError(f"{name} is not a JSON list (nor comma-separated)") from None
            digests = _digests(name, value)
            if not digests:
                # A value meant to hold keys ("," or '[""]') must not silently turn auth off.
                raise ValueError(
                    f"{name} is set but holds no SHA-256 digest; unset it (or set it empty) "
                    "to turn authentication off, or hash a key with `python -m gateway.keys`"
                )
            return digests
        if isinstance(value, list):
            return _digests(name, value)
        return value

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _parse_sentinels(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            for i, address in enumerate(value):
                host, _, port = str(address).rpartition(":")
                if not host or not port.isdigit() or not 0 < int(port) < 65536:
                    raise ValueError(f"redis_sentinels entry {i} ({address!r}) is not host:port")
        return value

    @model_validator(mode="after")
    def _limits_fit_the_visibility_timeout(self) -> Settings:
        # A task still running when its message becomes visible again runs twice at once.
        if not self.task_soft_time_limit <= self.task_time_limit < self.visibility_timeout:
            raise ValueError(
                "need task_soft_time_limit <= task_time_limit < visibility_timeout, got "
                f"{self.task_soft_time_limit}, {self.task_time_limit}, {self.visibility_timeout}"
            )
        return self

    def rate_limit(self) -> RateLimit:
        """The default per-key limits."""
        return RateLimit(
            jobs_per_second=self.rate_limit_jobs_per_second,
            jobs_burst=self.rate_limit_jobs_burst,
            rows_per_second=self.rate_limit_rows_per_second,
            rows_burst=self.rate_limit_rows_burst,
        )

    @model_validator(mode="after")
    def _replica_wait_fits_the_redis_timeout(self) -> Settings:
        # WAIT blocks its connection: a socket timeout first would hide why the job was refused.
        waits = bool(self.redis_sentinels) and self.replica_wait
        if waits and self.replica_wait_timeout >= self.redis_timeout:
            raise ValueError(
                f"need replica_wait_timeout < redis_timeout, got "
                f"{self.replica_wait_timeout} and {self.redis_timeout}"
            )
        return self

    @property
    def backend_url(self) -> str:
        """The result backend URL (the broker's unless set)."""
        return (self.result_backend_url or self.redis_url).get_secret_value()


def _digests(name: str, value: object) -> list[str]:
    """The entries of `value` as lower-case digests (blank entries dropped); `ValueError` naming
    the first entry that is not one, without echoing it (it may be a key pasted by mistake)."""
    if not isinstance(value, list):
        raise ValueError(f"{name} must be a list of SHA-256 hex digests")
    digests = [str(v).strip().lower() for v in value if str(v).strip()]
    bad = [d for d in digests if not _SHA256_HEX.match(d)]
    if bad:
        raise ValueError(
            f"{name} must be SHA-256 hex digests (64 hex digits); entry "
            f"{digests.index(bad[0])} is not (hash a key with `python -m gateway.keys`)"
        )
    return digests


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
