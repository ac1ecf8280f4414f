"""The OpenShift driver: the kubernetes client against the configured API,
with the portal's service account (never a user's token)."""

from __future__ import annotations

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from ops.errors import Forbidden, Unavailable
from ops.platform.base import PlatformDriver


class OpenShiftDriver(PlatformDriver):
    name = "openshift"

    def __init__(self, *, api_url: str, namespace: str, token: str | None = None, ca_file: str | None = None,
                 server_name: str = "hcap-server", patroni_name: str = "hcap-patroni",
                 patroni_leader_configmap: str = "hcap-patroni-leader", backup_name: str = "hcap-backup",
                 cronjobs: tuple[str, ...] = (), **_ignored):
        self.api_url = api_url.rstrip("/")
        self.namespace = namespace
        self.server_name = server_name
        self.patroni_name = patroni_name
        self.patroni_leader_configmap = patroni_leader_configmap
        self.backup_name = backup_name
        self.cronjobs = tuple(cronjobs)
        configuration = k8s.Configuration()
        configuration.host = self.api_url
        if token is None:
            token = _in_cluster_token()
        if token:
            configuration.api_key = {"authorization": "Bearer " + token}
        if ca_file:
            configuration.ssl_ca_cert = ca_file
        configuration.verify_ssl = True
        configuration.retries = 0
        self.configuration = configuration
        self.api_client = k8s.ApiClient(configuration)

    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api_client)

    def ping(self, timeout: float = 2.0) -> None:
        try:
            self.core().read_namespace(self.namespace, _request_timeout=timeout)
        except ApiException as exc:
            if exc.status in (401, 403):
                raise Forbidden(f"OpenShift API refused the service account ({exc.status})") from None
            raise Unavailable(f"OpenShift API answered {exc.status}") from None
        except Exception as exc:  # urllib3 / ssl errors
            raise Unavailable(f"OpenShift API unreachable: {type(exc).__name__}") from None

    def describe(self) -> str:
        return f"openshift · {self.api_url} · namespace {self.namespace}"


def _in_cluster_token() -> str | None:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None
