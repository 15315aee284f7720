"""`python -m demo [--port 8000] [--data-dir var/demo] [--scripted]`."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path

import uvicorn

from demo.app import build_demo
from demo.script import ScriptFailed, run_script
from services.payments.settings import StripeChoiceRefused
from shared.logging import configure_logging


async def serve(args: argparse.Namespace) -> int:
    try:
        demo = build_demo(Path(args.data_dir), host=args.host, port=args.port)
    except StripeChoiceRefused as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    if demo.real_stripe and args.scripted:
        # The script pays on the simulator's page; Stripe's own page needs a shopper.
        print(
            "demo: --scripted pays through the bundled simulator; unset "
            "PAYMENTS_STRIPE_API_KEY to run it",
            file=sys.stderr,
        )
        return 2
    server = uvicorn.Server(
        uvicorn.Config(demo.app, host=args.host, port=args.port, log_config=None, access_log=False)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            return 1
        await asyncio.sleep(0.05)
    print(f"checkout-saga demo on {demo.base_url}")
    print(f"  APIs: {demo.base_url}/api/<cart|orders|payments|provisioning>/  (+ docs)")
    print(f"  shopper token:  {demo.shopper_token}")
    print(f"  operator token: {demo.operator_token}")
    me = f"{demo.base_url}/api/payments/accounts/me"
    print(f"  try: curl -H 'Authorization: Bearer <shopper token>' {me}")
    if demo.real_stripe:
        hook = f"{demo.base_url}/api/payments/webhooks/stripe"
        print(f"  Stripe: your account in test mode; stripe listen --forward-to {hook}")
    if not args.scripted:
        await task
        return 0
    try:
        await run_script(demo.base_url, demo.shopper_token)
        print("\nscripted checkout finished: both orders completed")
        return 0
    except (ScriptFailed, Exception) as exc:
        print(f"\nscripted checkout FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        server.should_exit = True
        await task


def main() -> None:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--data-dir", default="var/demo")
    parser.add_argument("--scripted", action="store_true", help="run a scripted checkout and exit")
    parser.add_argument("--fresh", action="store_true", help="delete the demo's data first")
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(args.data_dir, ignore_errors=True)
    configure_logging("WARNING", json_lines=False)
    sys.exit(asyncio.run(serve(args)))


if __name__ == "__main__":
    main()
