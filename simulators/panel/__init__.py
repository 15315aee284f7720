"""The server-panel simulator (`app.py`): what `services/provisioning/http_provisioner.py` talks to
in the demo, the tests and the dev stack."""

from simulators.panel.app import PanelState, create_panel_app

__all__ = ["PanelState", "create_panel_app"]
