"""The one-command demo: every service in one process on embedded defaults."""
