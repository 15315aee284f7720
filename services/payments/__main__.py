from services.payments.bootstrap import build
from shared.cli import run

run(build)
