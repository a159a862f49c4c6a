"""The local DigitalOcean API over HTTPS: the ASGI app, the uvicorn server, and starting it in-process.

Layer: sandbox. `make_asgi` reads a request, waits the injected latency (not for `/_sandbox/`) and hands it
to `DoApi.handle` in a thread; `start_doapi` serves it from a thread of this process (tests, benches) with a
certificate signed by the sandbox's CA, and returns a `DoApiHandle`. The process form is `__main__`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.doapi.api import DoApi
from sandbox.doapi.state import DoApiOptions
from sandbox.doapi.tls import TlsFiles, ensure_tls
from sandbox.doapi.wire import ApiRequest


def make_asgi(api: DoApi) -> ASGIApp:
    """The ASGI app: reads the request, waits the injected latency, hands it to `api.handle` in a thread."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        req = ApiRequest(method=request.method, path=request.url.path, query=dict(request.query_params),
                         authorization=request.headers.get("authorization"), body=body)
        if not req.path.startswith("/_sandbox/"):
            latency = api.latency_s()
            if latency > 0:
                await asyncio.sleep(latency)
        resp = await run_in_threadpool(api.handle, req)
        content = b"" if resp.body is None else json.dumps(resp.body).encode()
        media_type = "application/json; charset=utf-8" if resp.body is not None else None
        await Response(content, status_code=resp.status, headers=resp.headers, media_type=media_type)(
            scope, receive, send)

    return app


def listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(False)
    return sock


def make_server(api: DoApi, tls: TlsFiles) -> uvicorn.Server:
    config = uvicorn.Config(make_asgi(api), ssl_certfile=str(tls.cert_path), ssl_keyfile=str(tls.key_path),
                            log_level="warning", access_log=False, lifespan="off", server_header=False,
                            # typed int, used as asyncio.wait_for's timeout: a float is fine
                            timeout_graceful_shutdown=api.options.shutdown_grace_s)  # type: ignore[arg-type]
    return uvicorn.Server(config)


@dataclass
class DoApiHandle:
    """A running in-process API: `url`, `ca_path` for clients, `stop()` (droplets' processes run on)."""

    url: str
    ca_path: Path
    api: DoApi
    _server: uvicorn.Server
    _thread: threading.Thread

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self.api.close()


def start_doapi(sandbox_dir: Path, host: str = "127.0.0.1", port: int = 0, token: str = "",
                options: DoApiOptions | None = None, timeout_s: float = 10.0) -> DoApiHandle:
    """Start the API in a thread of this process, on `host:port` (0: any free port), state under `<dir>/doapi/`."""
    sock = listen(host, port)
    url = f"https://{host}:{sock.getsockname()[1]}"
    try:
        api = DoApi(sandbox_dir, token, url, options)
        tls = ensure_tls(api.state_dir / "tls", host)
        server = make_server(api, tls)
    except BaseException:
        sock.close()
        raise
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="doapi-server")
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the local DigitalOcean API did not start on {url}")
        time.sleep(0.01)
    api.resume()
    return DoApiHandle(url, tls.ca_path, api, server, thread)
