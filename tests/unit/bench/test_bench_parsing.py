"""Reading tool output: pgbench's summary and py-spy's collapsed stacks."""

from __future__ import annotations

import pytest

from bench.limits import parse_pgbench_tps
from bench.profile import parse_collapsed, top_frames, where

PGBENCH_15 = """\
transaction type: /tmp/insert.sql
number of clients: 4
latency average = 0.867 ms
initial connection time = 9.372 ms
tps = 4608.375112 (without initial connection time)
"""


def test_pgbench_tps_from_either_summary_wording() -> None:
    assert parse_pgbench_tps(PGBENCH_15) == pytest.approx(4608.375112)
    assert parse_pgbench_tps("tps = 812.5 (excluding connections establishing)") == 812.5
    with pytest.raises(ValueError):
        parse_pgbench_tps("connection refused")


def test_top_frames_counts_self_and_inclusive_time() -> None:
    raw = [
        "run (asyncio/base_events.py:600);relay (/r/shared/relay.py:80);loads (/v/lib/python3.11/site-packages/pydantic/main.py:10) 30\n",
        "run (asyncio/base_events.py:600);select (/usr/lib/python3.11/selectors.py:468) 70\n",
        "run (asyncio/base_events.py:600);EpollSelector.select (selectors.py:468) 50\n",
        "garbage line\n",
    ]
    stacks = parse_collapsed(raw)
    assert [count for _, count in stacks] == [30, 70, 50]
    summary = top_frames(stacks)
    assert summary["samples"] == 100 and summary["idle_samples"] == 50
    assert summary["self"][0] == {
        "frame": "select (/usr/lib/python3.11/selectors.py:468)", "percent": 70.0,
    }  # fmt: skip
    inclusive = {f["frame"]: f["percent"] for f in summary["inclusive"]}
    assert inclusive["run (asyncio/base_events.py:600)"] == 100.0
    assert inclusive["relay (/r/shared/relay.py:80)"] == 30.0
    packages = {f["frame"]: f["percent"] for f in summary["self_by_package"]}
    assert packages == {"stdlib/selectors.py": 70.0, "pydantic": 30.0}


def test_where_names_the_package_or_repo_module() -> None:
    assert (
        where("f (/x/.venv/lib/python3.11/site-packages/sqlalchemy/orm/session.py:1)")
        == "sqlalchemy"
    )
    assert where("f (/work/main/shared/relay.py:88)") == "shared/relay.py"
    assert where("f (/usr/lib/python3.11/json/decoder.py:3)") == "stdlib/json/decoder.py"
