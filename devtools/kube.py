"""Start and stop a private Kubernetes API server: etcd plus kube-apiserver.

The OpenShift-facing tests (and a sandbox started with
HCAPADMIN_SANDBOX_KUBE=true) need an API server that really authenticates
tokens, authorises with RBAC, stores objects, serves subresources such as
``scale``, and runs server-side apply; a hand-written stand-in only imitates
those.  scripts/install.sh builds both binaries into .tools/bin from their Go
modules.  There is no kubelet, scheduler or controller manager: Pods are stored
objects that never run (whoever needs them Ready writes their status), and
pod exec and logs stay with the stand-in in tests/harness/openshift.py.

Everything listens on 127.0.0.1 only, on free ports, with a serving
certificate from a CA made for this one server (``ca_file`` trusts it),
tokens from a static token file (``--token-auth-file``) and
``--authorization-mode=RBAC``.  Plain Python; no Django.
"""

from __future__ import annotations

import csv
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devtools.services import TOOLS_BIN, _terminate, ensure_port_free, free_port, wait_for_port

# Who may hold a token.  Groups are those of the portal's settings
# (HCAPADMIN_GROUPS_*, defaults): hcap-admins, hcap-approvers, hcap-auditors,
# hcap-viewers.  The API server adds system:authenticated to each by itself.
#   key -> (user name, groups)
ADMIN = "admin"  # the harness itself: system:masters, never handed to the portal
PORTAL = "portal"  # the portal's service account


@dataclass(frozen=True)
class TokenUser:
    key: str
    user: str
    groups: tuple[str, ...]
    token: str


def default_users(service_account_namespace: str = "hcap") -> list[tuple[str, str, tuple[str, ...]]]:
    """(key, user name, groups) of every token the server accepts."""
    return [
        (ADMIN, "hcap-harness-admin", ("system:masters",)),
        (PORTAL, f"system:serviceaccount:{service_account_namespace}:hcapadmin",
         ("system:serviceaccounts", f"system:serviceaccounts:{service_account_namespace}")),
        ("alice", "alice", ("hcap-admins",)),
        ("april", "april", ("hcap-approvers",)),
        ("olga", "olga", ("hcap-auditors",)),
        ("vic", "vic", ("hcap-viewers",)),
        ("nora", "nora", ("other-team",)),
    ]


def _write_pki(directory: Path) -> dict[str, Path]:
    """A CA, a serving certificate for 127.0.0.1/localhost signed by it, and
    the RSA key pair that signs service-account tokens."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hcapadmin private kube-apiserver CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    paths = {"ca": directory / "ca.crt", "cert": directory / "apiserver.crt", "key": directory / "apiserver.key",
             "sa_key": directory / "sa.key", "sa_pub": directory / "sa.pub"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for name, private in (("key", key), ("sa_key", sa_key)):
        paths[name].write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
        paths[name].chmod(0o600)
    paths["sa_pub"].write_bytes(sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                 serialization.PublicFormat.SubjectPublicKeyInfo))
    return paths


@dataclass
class KubeAPI:
    """etcd + kube-apiserver under ``workdir``.

        kube = KubeAPI(workdir).start()
        kube.url, kube.ca_file, kube.token("alice")
        kube.request("GET", "/api/v1/namespaces", token=kube.token("admin"))
        kube.stop()
    """

    workdir: Path
    users: list = field(default_factory=default_users)
    # An audit policy (audit.k8s.io/v1 Policy as a dict): the server then logs
    # the requests it selects, one JSON event a line, to ``audit_log`` in
    # blocking mode (each event is written before the request's handling goes
    # on), so once stop() returns the file holds every event.
    audit_policy: dict | None = None
    ready_timeout: float = 180.0  # a failure guard only: start returns as soon as /readyz answers ok
    etcd_port: int = 0
    port: int = 0
    tokens: dict[str, TokenUser] = field(default_factory=dict)
    ca_file: Path | None = None
    etcd: subprocess.Popen | None = None
    apiserver: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def audit_log(self) -> Path:
        return Path(self.workdir) / "audit.log"

    def audit_events(self) -> list[dict]:
        """The events the audit policy selected, oldest first."""
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]

    def token(self, key: str) -> str:
        return self.tokens[key].token

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> "KubeAPI":
        for name in ("etcd", "kube-apiserver"):
            if not (TOOLS_BIN / name).exists():
                raise RuntimeError(f"{TOOLS_BIN / name} is missing; run `bash scripts/install.sh test` "
                                   "(or `HCAPADMIN_SANDBOX_KUBE=true make run`, which builds it too)")
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = _write_pki(self.workdir)
        self.ca_file = pki["ca"]
        token_file = self.workdir / "tokens.csv"
        with open(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", newline="") as fh:
            writer = csv.writer(fh)
            for key, user, groups in self.users:
                token = f"sha256~{key}-{secrets.token_urlsafe(24)}"
                self.tokens[key] = TokenUser(key, user, tuple(groups), token)
                writer.writerow([token, user, f"uid-{key}", ",".join(groups)])
        try:
            self._start_etcd()
            self._start_apiserver(pki, token_file)
            self.wait_ready()
        except Exception:
            self.stop()
            raise
        return self

    def _start_etcd(self, attempts: int = 3) -> None:
        """etcd on free ports.  A port found free can be taken by another
        process (an outgoing connection's ephemeral port) before etcd binds
        it: when etcd then exits while starting and says its address is in
        use, start it again on new ports (chosen ports are kept as they are)."""
        chosen = self.etcd_port
        for attempt in range(1, attempts + 1):
            try:
                return self._start_etcd_once(chosen)
            except RuntimeError:
                log = (self.workdir / "etcd.log").read_text(errors="replace")
                if chosen or attempt == attempts or "address already in use" not in log:
                    raise
                (self.workdir / "etcd.log").rename(self.workdir / f"etcd.log.{attempt}")
                shutil.rmtree(self.workdir / "etcd", ignore_errors=True)

    def _start_etcd_once(self, chosen: int | None) -> None:
        self.etcd_port = chosen or free_port()
        peer = free_port()
        ensure_port_free(self.etcd_port, "etcd")
        args = [str(TOOLS_BIN / "etcd"), "--name", "hcapadmin", "--data-dir", str(self.workdir / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"hcapadmin=http://127.0.0.1:{peer}",
                "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}",
                # a throwaway store: no fsync per write
                "--unsafe-no-fsync", "--log-level", "warn"]
        log = open(self.workdir / "etcd.log", "ab")
        self.etcd = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_for_port(self.etcd_port, self.ready_timeout, self.etcd, "etcd")

    def _start_apiserver(self, pki: dict[str, Path], token_file: Path) -> None:
        self.port = self.port or free_port()
        ensure_port_free(self.port, "kube-apiserver")
        args = [str(TOOLS_BIN / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--secure-port={self.port}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--tls-cert-file={pki['cert']}", f"--tls-private-key-file={pki['key']}",
                f"--token-auth-file={token_file}", "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={pki['sa_pub']}",
                f"--service-account-signing-key-file={pki['sa_key']}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--disable-admission-plugins=ServiceAccount",
                # no kubelets and no cluster network: the "kubernetes" Service gets no endpoints
                "--endpoint-reconciler-type=none",
                "--profiling=false", "--v=0"]
        if self.audit_policy is not None:
            policy = self.workdir / "audit-policy.json"
            policy.write_text(json.dumps(self.audit_policy))
            args += [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
                     "--audit-log-format=json", "--audit-log-mode=blocking", "--audit-log-maxbackup=0"]
        log = open(self.workdir / "kube-apiserver.log", "ab")
        self.apiserver = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()

    def wait_ready(self) -> None:
        """Poll /readyz until it answers ok; the deadline only turns a server
        that never comes up into a failure with its log's tail."""
        deadline = time.monotonic() + self.ready_timeout
        last = ""
        while time.monotonic() < deadline:
            for name, proc in (("etcd", self.etcd), ("kube-apiserver", self.apiserver)):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with code {proc.returncode} while starting:\n{self.log_tail(name)}")
            try:
                status, body = self.request("GET", "/readyz", token=self.token(ADMIN), timeout=5)
                if status == 200:
                    return
                last = f"/readyz answered {status}"
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver not ready after {self.ready_timeout:g}s ({last}):\n"
                           f"{self.log_tail('kube-apiserver')}")

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        _terminate(self.apiserver)
        _terminate(self.etcd)

    # -- talking to it ------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def request(self, method: str, path: str, *, token: str | None = None, body=None,
                content_type: str = "application/json", timeout: float = 30) -> tuple[int, object]:
        """One HTTPS request; returns (status, parsed JSON or text)."""
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        if token:
            headers["Authorization"] = "Bearer " + token
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=self.ssl_context()))
        try:
            with opener.open(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def admin(self, method: str, path: str, body=None, *, expect=(200, 201), **kwargs):
        """A request as the harness's cluster-admin; any other status raises."""
        status, answer = self.request(method, path, token=self.token(ADMIN), body=body, **kwargs)
        if status not in expect:
            raise RuntimeError(f"{method} {path} answered {status}: {answer}")
        return answer

    def api_client(self, key_or_token: str = PORTAL, *, host: str | None = None, ca_file: str | None = None):
        """A kubernetes ApiClient for one of the tokens (a key of ``tokens``,
        or a token itself), trusting this server's CA; ``host``/``ca_file``
        point it at a proxy in front of this server instead."""
        from kubernetes import client as k8s

        token = self.tokens[key_or_token].token if key_or_token in self.tokens else key_or_token
        configuration = k8s.Configuration()
        configuration.host = host or self.url
        configuration.ssl_ca_cert = str(ca_file or self.ca_file)
        configuration.proxy = None
        configuration.api_key = {"authorization": "Bearer " + token}
        configuration.verify_ssl = True
        configuration.retries = 0
        return k8s.ApiClient(configuration)


# -- the sandbox's token login (HCAPADMIN_SANDBOX_KUBE=true) -------------------------
SANDBOX_NAMESPACE = "hcap-sandbox"
# One demo user per portal role, in the group that role maps to by default
# (HCAPADMIN_GROUPS_*):  role -> (token key, user name, group)
SANDBOX_ROLE_USERS = {
    "admin": ("demo-admin", "ada", "hcap-admins"),
    "approver": ("demo-approver", "april", "hcap-approvers"),
    "auditor": ("demo-auditor", "olga", "hcap-auditors"),
    "viewer": ("demo-viewer", "vic", "hcap-viewers"),
}


def sandbox_users() -> list[tuple[str, str, tuple[str, ...]]]:
    """The harness admin (it creates the namespace and RBAC; its token is
    never printed) and the demo users of SANDBOX_ROLE_USERS."""
    return [(ADMIN, "hcap-sandbox-admin", ("system:masters",))] + [
        (key, user, (group,)) for key, user, group in SANDBOX_ROLE_USERS.values()]


def start_sandbox_kube(workdir: Path, namespace: str = SANDBOX_NAMESPACE) -> KubeAPI:
    """etcd + kube-apiserver with the demo users and an HCAP-like namespace in
    which, as in HCAP's, every role's group may look at pods and hcap-admins
    may also scale the server (so HCAPADMIN_ROLE_ACCESS_REVIEW=true works
    too).  Tokens are fresh each start and live only in ``workdir``'s token
    file (mode 0600) and in memory."""
    kube = KubeAPI(Path(workdir), users=sandbox_users()).start()
    try:
        kube.admin("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": namespace}})
        rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
        roles = {
            "hcap-reader": ([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
                            [group for _key, _user, group in SANDBOX_ROLE_USERS.values()]),
            "hcap-scaler": ([{"apiGroups": ["apps.openshift.io"], "resources": ["deploymentconfigs/scale"],
                              "resourceNames": ["hcap-server"], "verbs": ["get", "patch"]},
                             {"apiGroups": ["apps"], "resources": ["deployments/scale"],
                              "resourceNames": ["hcap-server"], "verbs": ["get", "patch"]}],
                            [SANDBOX_ROLE_USERS["admin"][2]]),
        }
        for name, (rules, groups) in roles.items():
            kube.admin("POST", f"{rbac}/roles", {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                                                 "metadata": {"name": name}, "rules": rules})
            kube.admin("POST", f"{rbac}/rolebindings", {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "Group", "name": g, "apiGroup": "rbac.authorization.k8s.io"} for g in groups]})
    except Exception:
        kube.stop()
        raise
    return kube


def sandbox_settings(kube: KubeAPI, namespace: str = SANDBOX_NAMESPACE) -> dict[str, str]:
    """The portal's environment for token login against ``kube`` (no token in it)."""
    return {"HCAPADMIN_OPENSHIFT_API_URL": kube.url, "HCAPADMIN_OPENSHIFT_CA_FILE": str(kube.ca_file),
            "HCAPADMIN_OPENSHIFT_NAMESPACE": namespace}


def oc_login_lines(kube: KubeAPI) -> dict[str, str]:
    """{role: the ``oc login`` line whose token logs in with that role}.  For
    the terminal only: never write these to a file."""
    return {role: f"oc login --token={kube.token(key)} --server={kube.url}"
            for role, (key, _user, _group) in SANDBOX_ROLE_USERS.items()}
