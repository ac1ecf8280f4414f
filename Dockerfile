# hcapadmin image for OpenShift: runs as an arbitrary non-root UID (group 0),
# serves with gunicorn; the same image runs the RQ worker:
#   web:    (default CMD)
#   worker: python manage.py jobs_worker
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=hcapadmin.settings \
    HOME=/app

# pg_dump/psql/pg_dumpall for the local driver and verification; pigz for
# parallel compression; node for node-pg-migrate (local driver).
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client pigz nodejs npm ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt package.json package-lock.json ./
RUN pip install -r requirements.txt \
 && npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force

COPY manage.py ./
COPY hcapadmin ./hcapadmin
COPY ops ./ops
COPY migrations_ui ./migrations_ui
COPY templates ./templates
COPY static ./static

# collectstatic needs importable settings, not real services.
RUN SECRET_KEY=build-only DATABASE_URL=postgres://build@localhost/build \
    HCAPADMIN_MANAGED_DATABASE_URL=postgres://build@localhost/build \
    python manage.py collectstatic --noinput -v 0 \
 && chgrp -R 0 /app && chmod -R g=u /app

USER 1001
EXPOSE 8080
CMD ["gunicorn", "hcapadmin.wsgi", "--bind", "0.0.0.0:8080", "--workers", "3", "--threads", "4", "--timeout", "120", "--access-logfile", "-", "--forwarded-allow-ips", "*"]
