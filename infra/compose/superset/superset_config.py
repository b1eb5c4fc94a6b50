# Superset settings for the container image (infra/compose/Dockerfile, target superset).
import os

# Signs sessions and encrypts the stored database URIs: from the Secret, never a default.
SECRET_KEY = os.environ["SUPERSET_SECRET_KEY"]
SQLALCHEMY_DATABASE_URI = "sqlite:////var/lib/superset/superset.db?check_same_thread=false"
DATA_DIR = "/var/lib/superset"
# No telemetry pixel, no example data.
SCARF_ANALYTICS = False
SUPERSET_WEBSERVER_TIMEOUT = 60
ROW_LIMIT = 10000
SUPERSET_DASHBOARD_PERIODICAL_REFRESH_LIMIT = 0
