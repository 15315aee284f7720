"""`python -m simulators.panel [--host H] [--port 12112]`."""

from __future__ import annotations

import argparse

import uvicorn

from simulators.panel.app import create_panel_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="server panel simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12112)
    args = parser.parse_args(argv)
    uvicorn.run(create_panel_app(), host=args.host, port=args.port, access_log=False)


if __name__ == "__main__":
    main()
