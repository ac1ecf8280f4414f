"""Fixtures shared by the whole suite.  Services (PostgreSQL, Redis,
FerretDB) are started by tests/harness/plugin.py before Django loads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness import plugin

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

# Property-based tests: random exploration on developers' machines; a fixed,
# derandomised set of examples on CI, so a submission's CI result does not
# depend on luck.  (A failure found locally is added as an explicit test.)
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    _hypothesis_settings.load_profile("ci")


@pytest.fixture(scope="session")
def services():
    """The running throwaway servers: {'postgres': Postgres, 'redis': Redis,
    'ferretdb': FerretDB, 'env': {...}}."""
    stack = plugin.stack()
    if not stack:
        pytest.fail("test services were not started (HCAPADMIN_TEST_SERVICES=external?)")
    return stack


@pytest.fixture(scope="session")
def pg(services):
    return services["postgres"]


@pytest.fixture(scope="session")
def redis_url(services):
    return services["redis"].url()


@pytest.fixture(scope="session")
def mongo_url(services):
    return services["ferretdb"].url()


@pytest.fixture(scope="module")
def mclient(mongo_url):
    """A pymongo client on the test FerretDB (tests that need other options define their own)."""
    from pymongo import MongoClient

    client = MongoClient(mongo_url, tz_aware=True)
    yield client
    client.close()


@pytest.fixture
def demo_users(django_db_blocker):
    """Local accounts admin/approver/auditor/viewer with the demo password."""
    from hcapadmin.accounts.demo import ensure_demo_users

    return ensure_demo_users(password="pw-" + "demo")


@pytest.fixture
def client_as(client, demo_users):
    """client_as('admin') -> a Django test client logged in with that role."""

    def login(role: str):
        from django.contrib.auth import get_user_model

        client.force_login(get_user_model().objects.get(username=role))
        return client

    return login


# --- browser -----------------------------------------------------------------
@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=os.environ.get("HCAPADMIN_CHROMIUM", "/usr/bin/chromium"),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        page = item.funcargs.get("page") if hasattr(item, "funcargs") else None
        if page is not None:
            ARTIFACTS.mkdir(exist_ok=True)
            try:
                path = ARTIFACTS / f"{item.name}.png"
                page.screenshot(path=str(path), full_page=True)
                report.sections.append(("screenshot", str(path)))
            except Exception as exc:  # the page may be gone
                report.sections.append(("screenshot", f"not taken: {exc}"))
    return report


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def login_page_as(page, demo_users):
    """login_page_as('admin') logs the browser page in through the form."""

    def login(role: str):
        page.goto("/login/")
        page.get_by_label("Username").fill(role)
        page.get_by_label("Password").fill("pw-demo")
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/")
        return page

    return login


# --- stand-in OpenShift API ---------------------------------------------------
@pytest.fixture(scope="session")
def _standin_server():
    from tests.harness.openshift import StandIn

    server = StandIn(tls=True).start()
    yield server
    server.stop()


@pytest.fixture
def standin(_standin_server):
    """The stand-in OpenShift API (HTTPS; CA bundle at standin.ca_file), with
    no routes: each test registers the endpoints it needs."""
    _standin_server.clear()
    yield _standin_server
    _standin_server.clear()


# The real kube-apiserver (started once, when first needed) and the stand-in in front of it.
from tests.harness.kubeapi import kube_api, openshift_real, real_identities  # noqa: E402,F401


# --- accounts and audit (issue 3) ----------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def _audit_truncate_guard_off_for_test_flush(django_db_setup, django_db_blocker):
    """pytest-django empties every table with TRUNCATE after transactional
    (live_server/browser) tests, which the audit table's TRUNCATE trigger
    refuses.  Switch that one trigger off in the test database only; UPDATE
    and DELETE stay refused, and tests/test_audit_trail.py re-enables it to
    prove TRUNCATE is refused."""
    from django.db import connection

    with django_db_blocker.unblock():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_trigger WHERE tgname = 'audit_auditevent_no_truncate'")
            if cursor.fetchone():  # absent with --nomigrations
                cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_auditevent_no_truncate")


class OpenShiftIdentities:
    """Stand-in identity endpoints: tokens -> (user, groups); unknown -> 401."""

    ADMIN = "sha256~admin-token-0123456789abcdef"
    AUDITOR = "sha256~auditor-token-0123456789abcdef"
    VIEWER = "sha256~viewer-token-0123456789abcdef"
    NOROLE = "sha256~norole-token-0123456789abcdef"

    def __init__(self, standin):
        self.standin = standin
        self.tokens = {
            self.ADMIN: ("alice", ["hcap-admins", "system:authenticated"]),
            self.AUDITOR: ("olga", ["hcap-auditors", "system:authenticated"]),
            self.VIEWER: ("vic", ["hcap-viewers"]),
            self.NOROLE: ("nora", ["system:authenticated", "other-team"]),
        }

    def install(self, *, selfsubjectreview=True, users_tilde=True):
        from tests.harness.openshift import status_body

        def ssr(req):
            who = self.tokens.get(req.bearer)
            if who is None:
                return 401, status_body(401, "Unauthorized", "Unauthorized")
            return 201, {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {},
                         "status": {"userInfo": {"username": who[0], "uid": "u-" + who[0], "groups": who[1]}}}

        def users(req):
            who = self.tokens.get(req.bearer)
            if who is None:
                return 401, status_body(401, "Unauthorized", "Unauthorized")
            return 200, {"kind": "User", "apiVersion": "user.openshift.io/v1", "metadata": {"name": who[0]},
                         "groups": who[1]}

        if selfsubjectreview:
            self.standin.route("POST", r"/apis/authentication.k8s.io/v1/selfsubjectreviews", ssr)
        if users_tilde:
            self.standin.route("GET", r"/apis/user.openshift.io/v1/users/~", users)
        return self

    def calls(self) -> list:
        return [r for r in self.standin.requests if "selfsubjectreviews" in r.path or r.path.endswith("/users/~")]


@pytest.fixture
def openshift_identities(standin, settings):
    """The portal pointed at the stand-in API (HCAPADMIN_OPENSHIFT_API_URL and
    CA), which answers identity reviews for a few known tokens."""
    settings.OPENSHIFT_API_URL = standin.url
    settings.OPENSHIFT_CA_FILE = str(standin.ca_file)
    from django.core.cache import cache

    cache.clear()  # the Bearer review cache
    return OpenShiftIdentities(standin).install()

# --- jobs (issue 4) ------------------------------------------------------------
@pytest.fixture
def run_jobs():
    """Run queued jobs now, in this process, with a real RQ worker in burst
    mode against the session's real Redis.

        job, created = submit("backup.manual", {}, request=req, target="hcap")
        run_jobs()                      # runs every queued job, returns when the queue is empty
        job.refresh_from_db(); assert job.status == "succeeded"

    Works in plain ``@pytest.mark.django_db`` tests: jobs submitted inside the
    test's (never committed) transaction are enqueued first, by firing the
    pending on-commit callbacks, and the worker runs them on the same
    connection, so it sees the test's rows.  (The heartbeat thread is off
    in-process: a second connection could not see those rows.)  The queue and
    the job locks are emptied before each test.  For jobs that need a separate
    worker process (crash tests, live_server browser tests), use
    ``jobs_worker_process`` with ``transaction=True``.  ``run_jobs(max_jobs=1)``
    runs one job only.
    """
    import signal

    from django.db import connection
    from rq import SimpleWorker

    from hcapadmin.jobs import runner
    from hcapadmin.jobs.queue import get_queue

    queue = get_queue()
    queue.empty()
    for key in queue.connection.scan_iter("hcapadmin:joblock:*"):
        queue.connection.delete(key)

    def run(max_jobs: int | None = None) -> bool:
        if connection.in_atomic_block:
            pending = list(connection.run_on_commit)
            connection.run_on_commit.clear()
            for _sids, func, _robust in pending:
                func()
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        previous = runner.HEARTBEAT_THREAD
        runner.HEARTBEAT_THREAD = False
        try:
            worker = SimpleWorker([queue], connection=queue.connection)
            return worker.work(burst=True, max_jobs=max_jobs, with_scheduler=False, logging_level="WARNING")
        finally:
            runner.HEARTBEAT_THREAD = previous
            for sig, handler in saved.items():
                signal.signal(sig, handler)

    yield run
    queue.empty()


@pytest.fixture
def jobs_worker_process(pg, redis_url):
    """Start real ``manage.py jobs_worker`` processes against the test
    database (use with ``@pytest.mark.django_db(transaction=True)`` so they
    see committed rows):

        worker = jobs_worker_process()                      # returns a subprocess.Popen
        worker = jobs_worker_process(imports=["tests.test_jobs_kinds"], env={"HCAPADMIN_JOB_HEARTBEAT_SECONDS": "1"})

    Heartbeat 1 s and sweeps every 1 s by default.  Every process still
    running at the end of the test is stopped (SIGTERM, then SIGKILL); output
    goes to ``proc.log_path``.
    """
    import signal
    import subprocess
    import sys
    import tempfile

    from django.db import connection

    from hcapadmin.jobs.queue import get_queue

    queue = get_queue()
    queue.empty()
    for key in queue.connection.scan_iter("hcapadmin:joblock:*"):
        queue.connection.delete(key)
    root = Path(__file__).resolve().parent.parent
    started = []

    def start(imports=(), env=None, burst=False):
        environ = dict(os.environ)
        environ.update({
            "DATABASE_URL": pg.url(connection.settings_dict["NAME"]),
            "REDIS_URL": redis_url,
            "HCAPADMIN_JOB_HEARTBEAT_SECONDS": "1",
            "HCAPADMIN_JOB_SWEEP_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
        })
        environ.update(env or {})
        argv = [sys.executable, str(root / "manage.py"), "jobs_worker"]
        for module in imports:
            argv += ["--import", module]
        if burst:
            argv.append("--burst")
        log = tempfile.NamedTemporaryFile(prefix="jobs-worker-", suffix=".log", delete=False)
        proc = subprocess.Popen(argv, cwd=root, env=environ, stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = log.name
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    queue.empty()


# --- outages -------------------------------------------------------------------
@pytest.fixture
def silent_server():
    """A TCP server on a free loopback port that accepts connections and never
    answers: (port, accepted connections).  For "down or slow" paths."""
    import socket
    import threading

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted = []
    stop = threading.Event()

    def loop():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield sock.getsockname()[1], accepted
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    sock.close()

