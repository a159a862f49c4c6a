"""The one HTTP client of the controller's API, used by every console command.

Layer: console (adapter). Errors come back as `ControllerError` with what to do about them; a 404 is
`ControllerNotFound` (a wrong cluster name is the caller's mistake, not an outage). Tokens go in the
`Authorization` header and never into a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests


class ControllerError(RuntimeError):
    """The controller could not be reached, or refused or failed the request; the message says which."""


class ControllerNotFound(ControllerError):
    """The controller answered 404: no such cluster (or path)."""


class ControllerClient:
    def __init__(self, url: str, token: str | None = None, timeout_s: float = 10.0,
                 session: requests.Session | None = None, ca_cert: str | None = None) -> None:
        """`token`: the operator's bearer token (read or admin); `ca_cert`: the CA that signed the controller's
        certificate (`redwarden controller init-tls` makes one), else the system's CAs verify it."""
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = session or requests.Session()
        # per request, not on the session: requests lets REQUESTS_CA_BUNDLE override a session's verify
        self.verify: str | bool = ca_cert or True
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _request(self, method: str, path: str, params: Mapping[str, str | int] | None = None,
                 json: object = None, expect: int = 200, timeout_s: float | None = None) -> Any:
        url = f"{self.url}{path}"
        try:
            resp = self.session.request(method, url, params=params, json=json, timeout=timeout_s or self.timeout_s,
                                        verify=self.verify)
        except requests.exceptions.SSLError:
            raise ControllerError(f"the controller at {self.url} did not prove its identity (TLS): give the CA "
                                  "that signed its certificate with --ca-cert or REDWARDEN_CA_CERT") from None
        except requests.RequestException as e:
            raise ControllerError(f"cannot reach the controller at {self.url}: {type(e).__name__}") from None
        if resp.status_code in (401, 403):
            raise ControllerError(f"{method} {url} answered HTTP {resp.status_code}: {resp.text[:200]} "
                                  "(give a token with --token-file or REDWARDEN_TOKEN)")
        if resp.status_code == 404:
            raise ControllerNotFound(f"{url}: {resp.text[:200]}")
        if resp.status_code != expect:
            raise ControllerError(f"{method} {url} answered HTTP {resp.status_code}: {resp.text[:300]}")
        try:
            return resp.json()
        except ValueError:
            raise ControllerError(f"{url} did not answer JSON") from None

    def get(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        return self._request("GET", path, params)

    # -- the API, one method per endpoint the console uses ----------------------------------------------
    def clusters(self) -> dict[str, Any]:
        data: dict[str, Any] = self.get("/v1/clusters")
        return data

    def cluster(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = self.get(f"/v1/clusters/{name}")
        return data

    def incidents(self, cluster: str | None = None, limit: int = 100) -> dict[str, Any]:
        params: dict[str, str | int] = {"limit": limit, **({"cluster": cluster} if cluster else {})}
        data: dict[str, Any] = self.get("/v1/incidents", params)
        return data

    def actions(self, cluster: str | None = None, limit: int = 100) -> dict[str, Any]:
        params: dict[str, str | int] = {"limit": limit, **({"cluster": cluster} if cluster else {})}
        data: dict[str, Any] = self.get("/v1/actions", params)
        return data

    def switch(self, cluster: str, verb: str, node: str | None = None) -> dict[str, Any]:
        """`pause`, `resume` or `ack` (admin): the cluster's heal status afterwards."""
        data: dict[str, Any] = self._request("POST", f"/v1/clusters/{cluster}/{verb}",
                                             params={"node": node} if node else None)
        return data

    def reset_heal_state(self, cluster: str) -> dict[str, Any]:
        """Replace the cluster's unreadable heal state with a fresh one (admin): its heal status afterwards."""
        data: dict[str, Any] = self._request("POST", f"/v1/clusters/{cluster}/heal-state/reset")
        return data

    def issue_node_key(self, cluster: str, node: str) -> str:
        """A new key for an existing node (admin); the old one stops working at once."""
        data = self._request("POST", f"/v1/clusters/{cluster}/nodes/{node}/key")
        return str(data["node_key"])

    def create_node(self, cluster: str, name: str, sentinels: list[str], firewall: bool = False) -> dict[str, Any]:
        """One droplet that bootstraps into the cluster (admin); the droplet as the controller created it."""
        data = self._request("POST", f"/v1/clusters/{cluster}/nodes",
                             json={"name": name, "sentinels": sentinels, "firewall": firewall}, expect=202,
                             timeout_s=max(self.timeout_s, 120))
        droplet: dict[str, Any] = data["droplet"]
        return droplet

    def secure(self, cluster: str, apply: bool = False, rotate: str | None = None, finish: bool = False,
               new_sha256: str | None = None) -> dict[str, Any]:
        """The migration to ACL users, or the rotation of one user's secret (`rotate`) (admin): the plan (dry
        run), or the started run (`apply`)."""
        body: dict[str, Any] = {"apply": apply}
        if rotate is not None:
            body.update(rotate=rotate, finish=finish)
        if new_sha256 is not None:
            body["new_sha256"] = new_sha256
        data: dict[str, Any] = self._request("POST", f"/v1/clusters/{cluster}/secure", json=body,
                                             expect=202 if apply else 200, timeout_s=max(self.timeout_s, 30))
        return data

    def secure_progress(self, cluster: str) -> dict[str, Any]:
        """The cluster's last migration run: its state and steps."""
        data: dict[str, Any] = self.get(f"/v1/clusters/{cluster}/secure")
        return data
