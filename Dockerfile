# hcapadmin image for OpenShift: runs as an arbitrary non-root UID (group 0)
# with a read-only root file system; /tmp is the only place it writes (an
# emptyDir in deploy/openshift/).  Serves with gunicorn; the same image runs
# the RQ worker:
#   web:    (default CMD)
#   worker: python manage.py jobs_worker
# No HOME: an arbitrary UID has no passwd entry and nothing may write there.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=hcapadmin.settings

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

# collectstatic needs importable settings, not real services (nor real keys:
# these build-only values never reach the running image).  Bytecode is
# compiled here because the running image cannot write it.  The app is
# readable by every UID and writable by none.
RUN SECRET_KEY=build-only DATABASE_URL=postgres://build@localhost/build \
    HCAPADMIN_MANAGED_DATABASE_URL=postgres://build@localhost/build \
    HCAPADMIN_AUDIT_KEY=build-only:not-a-real-key-only-for-collectstatic \
    python manage.py collectstatic --noinput -v 0 \
 && python -m compileall -q manage.py hcapadmin ops migrations_ui \
 && chmod -R a+rX,go-w /app

USER 1001
EXPOSE 8080
# --no-control-socket: gunicorn would otherwise create $HOME/.gunicorn/gunicorn.ctl.
CMD ["gunicorn", "hcapadmin.wsgi", "--bind", "0.0.0.0:8080", "--workers", "3", "--threads", "4", "--timeout", "120", "--access-logfile", "-", "--forwarded-allow-ips", "*", "--no-control-socket"]
