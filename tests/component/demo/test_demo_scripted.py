"""The README's demo command, run as a shopper would: both scripted checkouts must complete."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from devstack.stack import free_port


def test_scripted_demo_completes_a_credit_and_a_card_checkout(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "demo",
            "--scripted",
            "--fresh",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "scripted checkout finished: both orders completed" in out
    # Every saga step was printed as it happened, in order, for each checkout.
    credit, card = (
        out[out.index("1) credit-only") : out.index("2) card")],
        out[out.index("2) card") :],
    )
    assert printed_steps(credit) == ["pending", "paid", "provisioning", "completed"]
    assert printed_steps(card) == [
        "pending",
        "awaiting_payment",
        "paid",
        "provisioning",
        "completed",
    ]
    # 1000 seeded - 520 spent on the credit-only order + 100 from the credit pack bought by card.
    assert "shopper credit balance now: 580" in out


def printed_steps(section: str) -> list[str]:
    return re.findall(r"^\s+\+\s*[\d.]+s\s+(\w+)", section, flags=re.MULTILINE)
