"""Helpers for tests that run against real infrastructure (PostgreSQL, RabbitMQ)."""

from shared.testing.infra import (
    InfraUnavailable,
    asyncpg_dsn,
    create_database,
    database_url,
    drop_database,
    postgres_admin_url,
    rabbitmq_url,
)

__all__ = [
    "InfraUnavailable",
    "asyncpg_dsn",
    "create_database",
    "database_url",
    "drop_database",
    "postgres_admin_url",
    "rabbitmq_url",
]
