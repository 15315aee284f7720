from services.cart.bootstrap import build
from shared.cli import run

run(build)
