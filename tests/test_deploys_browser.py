"""Browser: an admin previews a db-prep deploy from its parameter form,
confirms it by typing the namespace, and watches the job (a real
jobs_worker process against the real API server) finish on the deploy's page."""

from __future__ import annotations

import re

import pytest

from tests.harness.kubeapi import kube_api, openshift_real  # noqa: F401  (fixtures)
from tests.test_deploys import TEMPLATES, cluster  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_preview_confirm_and_watch_a_deploy(page, login_page_as, jobs_worker_process, cluster):
    from playwright.sync_api import expect

    worker = jobs_worker_process(env={
        "HCAPADMIN_PLATFORM": "openshift", "HCAPADMIN_OPENSHIFT_API_URL": cluster.url,
        "HCAPADMIN_OPENSHIFT_NAMESPACE": cluster.namespace, "HCAPADMIN_OPENSHIFT_TOKEN": cluster.portal_token,
        "HCAPADMIN_OPENSHIFT_CA_FILE": cluster.ca_file, "HCAPADMIN_TEMPLATES_DIR": str(TEMPLATES),
        "HCAPADMIN_TOOLS_NAMESPACE": cluster.tools})
    login_page_as("admin")
    page.goto("/deploys/")
    page.get_by_role("link", name="Database prep").click()
    page.wait_for_url(re.compile(r".*/deploys/new/db-prep/$"))
    expect(page.get_by_label("Application name")).to_have_value("hcap")
    expect(page.get_by_test_id("deploy-params-form")).to_contain_text("never shown")
    page.get_by_role("button", name="Preview").click()
    page.wait_for_url(re.compile(r".*/deploys/\d+/$"))
    expect(page.get_by_test_id("deploy-items")).to_contain_text("hcap-patroni-settings")
    expect(page.get_by_test_id("deploy-warnings")).to_contain_text("kept as it is")
    page.get_by_label(re.compile("Type the namespace name")).fill(cluster.namespace)
    page.get_by_role("button", name="Confirm and deploy").click()
    live = page.get_by_test_id("job-live")
    expect(live).to_have_attribute("data-status", "succeeded", timeout=60_000)
    status, _ = cluster.kube.request("GET", f"/api/v1/namespaces/{cluster.namespace}/configmaps/hcap-patroni-settings",
                                     token=cluster.kube.token("admin"))
    assert status == 200, open(worker.log_path).read()[-2000:]
