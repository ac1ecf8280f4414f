"""A stand-in OpenShift API server for the tests, over real HTTP(S).

It is not a mock of the kubernetes client: the client under test talks to it
over TCP exactly as it would to a cluster (TLS with a CA bundle, bearer
tokens, JSON bodies, and the websocket channel protocol for exec).  Tests
register handlers for the endpoints they exercise:

    api = StandIn().start()
    api.route("GET", r"/api/v1/namespaces/(?P<ns>[^/]+)", lambda req: (200, {...}))
    api.websocket(r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/exec", handler)
    ...
    api.stop()

Every request is recorded in ``api.requests`` (method, path, query, headers,
body) so tests can check, for example, where a token was sent.

``api.forward_to(Upstream(...))`` puts a real kube-apiserver behind it (the
``openshift_real`` fixture of tests/harness/kubeapi.py): what no route serves
goes there with the caller's token, and exec is first authorised there.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import re
import ssl
import struct
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Request:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes
    match: dict = field(default_factory=dict)

    @property
    def json(self):
        return json.loads(self.body or b"null")

    @property
    def bearer(self) -> str | None:
        value = self.headers.get("authorization", "")
        return value[7:] if value.lower().startswith("bearer ") else None


class WebSocket:
    """Server side of one websocket connection (RFC 6455, no extensions)."""

    def __init__(self, handler: BaseHTTPRequestHandler, subprotocol: str | None):
        self._rfile = handler.rfile
        self._wfile = handler.wfile
        self.subprotocol = subprotocol
        self.closed = False

    def send(self, payload: bytes, opcode: int = 0x2) -> None:
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([n])
        elif n < 65536:
            header += bytes([126]) + struct.pack("!H", n)
        else:
            header += bytes([127]) + struct.pack("!Q", n)
        self._wfile.write(header + payload)
        self._wfile.flush()

    def send_channel(self, channel: int, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.send(bytes([channel]) + data)

    def recv(self) -> tuple[int, bytes] | None:
        head = self._rfile.read(2)
        if len(head) < 2:
            return None
        opcode = head[0] & 0x0F
        masked = head[1] & 0x80
        n = head[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._rfile.read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._rfile.read(8))[0]
        mask = self._rfile.read(4) if masked else b""
        data = bytearray(self._rfile.read(n))
        if masked:
            for i in range(len(data)):
                data[i] ^= mask[i % 4]
        if opcode == 0x8:
            self.closed = True
        return opcode, bytes(data)

    def close(self, code: int = 1000) -> None:
        if not self.closed:
            try:
                self.send(struct.pack("!H", code), opcode=0x8)
            except OSError:
                pass
            self.closed = True


def _make_cert(directory: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in openshift CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_file, cert_file, key_file


class StandIn:
    # A real API server behind the stand-in (see forward_to()); None: only routes.
    upstream: "Upstream | None" = None

    def __init__(self, tls: bool = True):
        self.tls = tls
        self.routes: list[tuple[str, re.Pattern, object]] = []
        self.ws_routes: list[tuple[re.Pattern, object]] = []
        self.requests: list[Request] = []
        self.state: dict = {}
        self._lock = threading.Lock()
        self._dir = Path(tempfile.mkdtemp(prefix="standin-"))
        self.ca_file: Path | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- registration ---------------------------------------------------------
    def route(self, method: str, pattern: str, handler) -> None:
        """handler(Request) -> (status, body[, headers]); body is a dict/list
        (sent as JSON), bytes or str."""
        self.routes.insert(0, (method.upper(), re.compile("^" + pattern + "$"), handler))

    def websocket(self, pattern: str, handler) -> None:
        """handler(Request, WebSocket): called after the upgrade handshake."""
        self.ws_routes.insert(0, (re.compile("^" + pattern + "$"), handler))

    def clear(self) -> None:
        with self._lock:
            self.routes.clear()
            self.ws_routes.clear()
            self.requests.clear()
            self.state.clear()

    # -- lifecycle ------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"

    def start(self) -> "StandIn":
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def _dispatch(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                req = Request(self.command, parts.path, parse_qs(parts.query), headers, body)
                with standin._lock:
                    standin.requests.append(req)
                if headers.get("upgrade", "").lower() == "websocket":
                    return self._upgrade(req)
                for method, pattern, handler in list(standin.routes):
                    m = pattern.match(parts.path)
                    if m and method == self.command:
                        req.match = m.groupdict()
                        result = handler(req)
                        return self._respond(*result)
                if standin.upstream is not None:  # see forward_to()
                    return standin._forward_http(self, req)
                self._respond(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "message": f"the server could not find the requested resource ({parts.path})",
                                    "reason": "NotFound", "code": 404})

            def _respond(self, status, body, headers=None):
                if isinstance(body, (dict, list)):
                    payload = json.dumps(body).encode()
                    ctype = "application/json"
                elif isinstance(body, str):
                    payload = body.encode()
                    ctype = "text/plain"
                else:
                    payload = body or b""
                    ctype = "application/octet-stream"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def _upgrade(self, req):
                if standin.upstream is not None:  # see forward_to()
                    refusal = standin._exec_refusal(req)
                    if refusal is not None:
                        return self._respond(*refusal)
                for pattern, handler in list(standin.ws_routes):
                    m = pattern.match(req.path)
                    if m:
                        req.match = m.groupdict()
                        break
                else:
                    return self._respond(404, {"kind": "Status", "status": "Failure", "code": 404,
                                               "message": "no websocket endpoint", "reason": "NotFound"})
                if req.bearer is None and "pre_upgrade_check" not in standin.state:
                    pass  # handlers decide about authentication
                key = req.headers.get("sec-websocket-key", "")
                accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
                offered = [p.strip() for p in req.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
                chosen = next((p for p in ("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io") if p in offered), None)
                self.send_response(101, "Switching Protocols")
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                if chosen:
                    self.send_header("Sec-WebSocket-Protocol", chosen)
                self.end_headers()
                self.wfile.flush()
                ws = WebSocket(self, chosen)
                try:
                    handler(req, ws)
                finally:
                    ws.close()
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls:
            self.ca_file, cert, key = _make_cert(self._dir)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    # -- a real API server behind the stand-in -----------------------------------
    def forward_to(self, upstream: "Upstream | None") -> None:
        """Pass every request that no route serves to a real kube-apiserver,
        with the caller's own Authorization header, so that authentication,
        RBAC, storage, subresources and server-side apply are the real thing.
        The stand-in keeps only what needs OpenShift or a kubelet: the routes
        and websocket (exec) handlers that tests register.  Before an exec
        handler runs, the real server decides as it would for a real pod: who
        the caller is (a SelfSubjectReview with their token, else 401) and
        whether they may ``create pods/exec`` there (a SubjectAccessReview,
        else 403), does the pod exist (else 404), is it running (else 400).
        ``None`` turns it off."""
        self.upstream = upstream

    def _forward_http(self, handler: BaseHTTPRequestHandler, req: Request) -> None:
        status, headers, payload = self.upstream.send(req.method, handler.path, req.headers, req.body)
        handler.send_response(status)
        for name in ("Content-Type", "Warning", "Audit-Id"):
            if headers.get(name.lower()):
                handler.send_header(name, headers[name.lower()])
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _exec_refusal(self, req: Request):
        """(status, body) when the real server would refuse this exec, else None."""
        m = re.match(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/(?P<sub>exec|attach|portforward)$",
                     req.path)
        if m is None:
            return None
        namespace, pod, sub = m.group("ns"), m.group("pod"), m.group("sub")
        refused = self.authorize(req, namespace=namespace, verb="create", resource="pods", subresource=sub, name=pod)
        if refused is not None:
            return refused
        status, _headers, payload = self.upstream.send(
            "GET", f"/api/v1/namespaces/{namespace}/pods/{pod}", self.upstream.admin_headers(), b"")
        if status == 404:
            return 404, status_body(404, f'pods "{pod}" not found', "NotFound")
        if status != 200:
            return 500, status_body(500, f"reading pod {pod} answered {status}")
        phase = (json.loads(payload).get("status") or {}).get("phase")
        if phase != "Running":
            return 400, status_body(400, f"unable to upgrade connection: pod {pod} is not running ({phase})",
                                    "BadRequest")
        return None

    def authorize(self, req: Request, *, namespace: str, verb: str, resource: str, group: str = "",
                  subresource: str = "", name: str = ""):
        """(status, body) when the real server refuses the caller of ``req``
        this access, else None; decided as OpenShift's own API servers and a
        kubelet decide for a caller: who they are (a SelfSubjectReview with
        their token, else 401), then a SubjectAccessReview for that user made
        with the harness's admin token (so the real server's audit log shows
        the check, for whom and for what)."""
        auth = {"authorization": req.headers["authorization"]} if "authorization" in req.headers else {}
        status, _headers, payload = self.upstream.send(
            "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            dict(auth, **{"content-type": "application/json"}),
            b'{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}')
        if status in (401, 403):
            return status, json.loads(payload or b"null") or status_body(status, "refused")
        if status != 201:
            return 500, status_body(500, f"identity review answered {status}")
        who = json.loads(payload)["status"]["userInfo"]
        attrs = {"namespace": namespace, "verb": verb, "group": group, "resource": resource}
        if subresource:
            attrs["subresource"] = subresource
        if name:
            attrs["name"] = name
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
            "user": who.get("username", ""), "uid": who.get("uid", ""), "groups": who.get("groups", []),
            "extra": who.get("extra", {}), "resourceAttributes": attrs}}
        status, _headers, payload = self.upstream.send(
            "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            dict(self.upstream.admin_headers(), **{"content-type": "application/json"}), json.dumps(review).encode())
        if status != 201:
            return 500, status_body(500, f"access review answered {status}")
        if not (json.loads(payload).get("status") or {}).get("allowed"):
            what = f"{resource}/{subresource}" if subresource else resource
            kind = f"{resource}.{group}" if group else resource
            named = f' "{name}"' if name else ""
            return 403, status_body(403, f'{kind}{named} is forbidden: User '
                                         f'"{who.get("username")}" cannot {verb} resource "{what}" in the namespace '
                                         f'"{namespace}"', "Forbidden")
        return None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def status_body(code: int, message: str, reason: str = "") -> dict:
    """A Kubernetes ``Status`` object, as the API returns on errors."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class Upstream:
    """A real kube-apiserver the stand-in forwards to (``StandIn.forward_to``):
    its URL, the CA bundle that verifies it, and the harness's own admin
    token (used only for the stand-in's own look-ups, never for a caller)."""

    HEADERS = ("authorization", "content-type", "accept", "user-agent")

    def __init__(self, url: str, ca_file: str, admin_token: str):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 443
        self.context = ssl.create_default_context(cafile=str(ca_file))
        self._admin_token = admin_token

    def admin_headers(self) -> dict:
        return {"authorization": "Bearer " + self._admin_token, "accept": "application/json"}

    def send(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        import http.client

        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=60)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() in self.HEADERS}
            conn.request(method, path, body=body or None, headers=sent)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()
