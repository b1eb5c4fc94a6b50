#!/bin/sh
# Superset in a container: migrate the metadata database, create the admin once, start gunicorn.
set -eu
superset db upgrade
# Fails harmlessly when the user exists already (a restart).
superset fab create-admin --username "$SUPERSET_ADMIN_USER" --firstname Superset \
    --lastname Admin --email "$SUPERSET_ADMIN_USER@localhost" \
    --password "$SUPERSET_ADMIN_PASSWORD" >/dev/null 2>&1 || true
superset init
exec gunicorn --workers 2 --threads 8 --timeout 60 --bind 0.0.0.0:8088 \
    "superset.app:create_app()"
