"""Superset: pinned install, config template, dashboards as code (see infra/superset.py)."""
