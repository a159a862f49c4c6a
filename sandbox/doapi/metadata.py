"""What a container droplet asks the cloud over plain HTTP on the hub's gateway: its metadata, its
NoCloud seed, and files (the agent's .deb).

Layer: sandbox. DigitalOcean answers `http://169.254.169.254/metadata/v1/...` with the asking droplet's own
data; this service does the same on `ContainerSettings.metadata_url`, telling droplets apart by the address
a request comes from (each container has its own on the bridge):

    GET /metadata/v1/id | /hostname | /interfaces/private/0/ipv4/address
    GET /seed/<id>/meta-data | /user-data | /vendor-data      cloud-init's NoCloud (seedfrom)
    GET /files/<name>                                        a file of ContainerSettings.files_dir

It listens only on the gateway address, inside the sandbox's own network namespace.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sandbox.doapi.state import Cloud, ContainerSettings

SEED = re.compile(r"^/seed/(\d+)/(meta-data|user-data|vendor-data)$")
FILE = re.compile(r"^/files/([A-Za-z0-9._+-]+)$")


class MetadataServer:
    """The service in a thread of the local DigitalOcean's process; `close()` stops it."""

    def __init__(self, cloud: Cloud, settings: ContainerSettings) -> None:
        self.cloud = cloud
        self.settings = settings
        handler = _handler(cloud, settings)
        self.httpd = ThreadingHTTPServer((settings.gateway, settings.meta_port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="doapi-metadata")
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5.0)


def _handler(cloud: Cloud, settings: ContainerSettings) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                found = self._answer(path)
            except Exception:  # an unexpected error is a 500, never a dead service thread
                self._send(500, b"internal error\n")
                return
            if found is None:
                self._send(404, b"not found\n")
            else:
                self._send(200, found[0], found[1])

        def _answer(self, path: str) -> tuple[bytes, str] | None:
            m = FILE.match(path)
            if m:
                f = settings.files_dir / m.group(1)
                return (f.read_bytes(), "application/octet-stream") if f.is_file() else None
            m = SEED.match(path)
            if m:
                with cloud.lock:
                    d = cloud.state["droplets"].get(m.group(1))
                    if d is None:
                        return None
                    text = {"meta-data": f"instance-id: droplet-{d['id']}\nlocal-hostname: {d['name']}\n",
                            "user-data": d.get("user_data") or "",
                            "vendor-data": ""}[m.group(2)]
                return text.encode(), "text/plain"
            if not path.startswith("/metadata/v1/"):
                return None
            me = self.client_address[0]
            with cloud.lock:
                mine = [d for d in cloud.state["droplets"].values() if d.get("address") == me]
                if not mine:
                    return None
                d = mine[0]
                fields = {"/metadata/v1/id": str(d["id"]), "/metadata/v1/hostname": str(d["name"]),
                          "/metadata/v1/interfaces/private/0/ipv4/address": me}
            value = fields.get(path.rstrip("/"))
            return (value.encode(), "text/plain") if value is not None else None

    return Handler
