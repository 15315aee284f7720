"""Run the simulator: ``python -m simulators.stripe [--host H] [--port P]``."""

from __future__ import annotations

import argparse

import uvicorn

from .app import create_app
from .config import SimConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.stripe",
        description="Stripe API simulator (Checkout Sessions, events, signed webhooks). "
        "Configured by STRIPE_SIM_* environment variables.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    config = SimConfig()
    if "public_url" not in config.model_fields_set:
        # Not configured: keep the pay-page links pointing at where we actually listen.
        config = config.model_copy(update={"public_url": f"http://{args.host}:{args.port}"})
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
