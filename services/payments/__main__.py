import logging
import sys

from services.payments.bootstrap import StripeNotConfigured, build
from shared.cli import run
from shared.logging import configure_logging
from shared.runtime import ServiceRuntime


def build_or_refuse() -> ServiceRuntime:
    try:
        return build()
    except StripeNotConfigured as exc:
        # Settings did not load, so neither did the log settings: the default format it is.
        configure_logging()
        logging.getLogger("services.payments").error("payments refuses to start: %s", exc)
        sys.exit(2)


run(build_or_refuse)
