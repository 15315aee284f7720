from services.orders.bootstrap import build
from shared.cli import run

run(build)
