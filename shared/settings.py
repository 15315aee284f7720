"""Settings every service has; each service subclasses with its own env prefix (ORDERS_, ...)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    delivery_limit: int = Field(default=5, ge=1)
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
