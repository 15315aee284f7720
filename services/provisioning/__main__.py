from services.provisioning.bootstrap import build
from shared.cli import run

run(build)
