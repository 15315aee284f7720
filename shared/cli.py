"""`python -m services.<svc> [serve|migrate]` for every service."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from shared.logging import configure_logging
from shared.migrations import SchemaNotAtHead, ensure_at_head, upgrade_to_head
from shared.runtime import ServiceRuntime

log = logging.getLogger("shared.cli")

# uvloop's event loop (libuv, in C) spends far less per socket operation than asyncio's, and a
# service is mostly socket operations: a round trip per SQL statement, AMQP frames, HTTP.
EVENT_LOOP = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
# httptools (the C parser of Node's http-parser) instead of h11, which parses in pure Python and
# cost a service more CPU per request than most routes do.
HTTP_PARSER = "httptools"


def main(build: Callable[[], ServiceRuntime[Any, Any]], argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    runtime = build()
    configure_logging(runtime.settings.log_level, json_lines=runtime.settings.log_json)

    if args.command == "migrate":
        asyncio.run(_migrate(runtime))
        log.info("%s schema upgraded to head", runtime.name)
        return 0

    try:
        asyncio.run(_check(runtime))
    except SchemaNotAtHead as exc:
        log.error("%s refuses to start: %s", runtime.name, exc)
        return 2
    uvicorn.run(
        runtime.app(),
        host=runtime.settings.http_host,
        port=runtime.settings.http_port,
        log_config=None,
        access_log=False,
        loop=EVENT_LOOP,
        http=HTTP_PARSER,
    )
    return 0


async def _migrate(runtime: ServiceRuntime[Any, Any]) -> None:
    await upgrade_to_head(runtime.engine, runtime.spec.migrations_dir)
    await runtime.engine.dispose()


async def _check(runtime: ServiceRuntime[Any, Any]) -> None:
    try:
        await ensure_at_head(runtime.engine, runtime.spec.migrations_dir)
    finally:
        await runtime.engine.dispose()


def run(build: Callable[[], ServiceRuntime[Any, Any]]) -> None:
    sys.exit(main(build))
