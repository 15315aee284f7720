"""Settings every service has; each service subclasses with its own env prefix (ORDERS_, ...)."""

from __future__ import annotations

from pydantic import Field, PositiveFloat, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.delivery import DEFAULT_BACKOFF, DEFAULT_HORIZON, RetryPolicy


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/service.db"
    # "memory://" selects the in-process bus (demo and unit tests only).
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # Prefix of every exchange and queue; lets test runs share one broker without crosstalk.
    bus_namespace: str = "checkout"
    jwt_secret: SecretStr = SecretStr("dev-only-insecure-jwt-secret-change-me")
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    log_level: str = "INFO"
    log_json: bool = True
    # How long a starting service waits for the broker before giving up (exit code 3).
    broker_connect_within_seconds: float = Field(default=60.0, ge=0)
    prefetch: int = Field(default=32, ge=1, le=1000)
    # A crash-loop guard only (deliveries never acked, e.g. the process dies applying it): a
    # transient failure is retried through the retry queues, each time as a new delivery.
    delivery_limit: int = Field(default=20, ge=1)
    # Delays before the retries of a transiently failing message (the last is the cap, then
    # repeated), and how long after its first failure it is dead-lettered (shared/delivery.py).
    retry_backoff_seconds: tuple[PositiveFloat, ...] = Field(default=DEFAULT_BACKOFF, min_length=1)
    retry_horizon_seconds: float = Field(default=DEFAULT_HORIZON, gt=0)
    # Units of work applying messages at once, and the most messages one of them applies
    # together when deliveries queue up behind them (shared/dispatch.py, group commit).
    handler_concurrency: int = Field(default=4, ge=1)
    handler_group_max: int = Field(default=16, ge=1)
    relay_batch_size: int = Field(default=200, ge=1)
    # The relay is woken on every local commit; polling only catches rows of crashed peers.
    relay_idle_poll_seconds: float = Field(default=1.0, gt=0)
    # Connections per process, all counted: replicas x processes x this must stay below the
    # server's max_connections (100 by default), or a busy stack is refused connections.
    db_pool_size: int = Field(default=8, ge=1)

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(backoff=self.retry_backoff_seconds, horizon=self.retry_horizon_seconds)
