"""The local DigitalOcean API's actions at work: each in its own thread, from in-progress to its outcome.

Layer: sandbox. `start` runs an action (a droplet's create, power and rename actions, a reserved IP's assign
and unassign) in a thread and records how it ended (completed or errored; interrupted when the API closes,
left in progress to be carried on by `resume` at the next start). An action type listed in the faults'
`action_errors` errors after a moment instead of doing anything.
"""

from __future__ import annotations

import copy
import threading
import time

import structlog

from sandbox.doapi.power import Outcome, Power
from sandbox.doapi.state import Cloud, Runtime
from sandbox.doapi.wire import Json, now_iso

log = structlog.get_logger("redwarden.doapi")

# How each power action stops a droplet's processes: SIGTERM then SIGKILL (graceful), or SIGKILL at once.
GRACEFUL_STOP = {"power_off": False, "shutdown": True, "power_on": False, "reboot": True, "power_cycle": False}


class ActionRunner:
    """Runs actions in threads over the shared `Cloud`, the droplets' processes through `Power`."""

    def __init__(self, cloud: Cloud, power: Power) -> None:
        self.cloud = cloud
        self.power = power
        self.options = cloud.options

    def resume(self) -> None:
        """Carry on the actions a previous API process left in progress (a boot, a reboot, an assign)."""
        with self.cloud.lock:
            pending = sorted((a for a in self.cloud.state["actions"].values() if a["status"] == "in-progress"),
                             key=lambda a: a["id"])
        for action in pending:
            log.info("action.resumed", action_id=action["id"], type=action["type"])
            self.start(action, forced_error=False)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the workers; droplets' processes run on, and in-progress actions resume at the next start."""
        self.cloud.closing.set()
        deadline = time.monotonic() + timeout_s
        for t in list(self.cloud.threads):
            t.join(max(0.0, deadline - time.monotonic()))

    def start(self, action: Json, forced_error: bool | None = None) -> None:
        if forced_error is None:
            with self.cloud.lock:
                forced_error = action["type"] in self.cloud.faults.action_errors
        t = threading.Thread(target=self._run_action, args=(action["id"], forced_error), daemon=True,
                             name=f"doapi-action-{action['id']}")
        with self.cloud.lock:
            self.cloud.threads = [x for x in self.cloud.threads if x.is_alive()]
            self.cloud.threads.append(t)
            if action["resource_type"] == "droplet":
                self.cloud.runtime(action["resource_id"]).thread = t
        t.start()

    def _run_action(self, action_id: int, forced_error: bool) -> None:
        with self.cloud.lock:
            action = copy.deepcopy(self.cloud.state["actions"][str(action_id)])
        outcome: Outcome
        try:
            if forced_error:
                self.cloud.closing.wait(self.options.action_delay_s)
                outcome = "errored"
            else:
                outcome = self._perform(action)
        except Exception:
            log.exception("action.crashed", action_id=action_id, type=action["type"])
            outcome = "errored"
        if outcome == "interrupted":
            return  # the API is closing: resumed at the next start
        with self.cloud.lock:
            stored = self.cloud.state["actions"].get(str(action_id))
            if stored is not None:
                stored["status"] = outcome
                stored["completed_at"] = now_iso()
                self.cloud.save()
        log.info("action.finished", action_id=action_id, type=action["type"], resource_id=action["resource_id"],
                 status=outcome)

    def _perform(self, action: Json) -> Outcome:
        kind, type_ = action["resource_type"], action["type"]
        if kind == "reserved_ip":
            return self._perform_reserved_ip(action)
        droplet_id = int(action["resource_id"])
        with self.cloud.lock:
            rt = self.cloud.runtime(droplet_id)
        if type_ == "create":
            return self.power.boot(droplet_id, rt)
        if type_ == "rename":
            with self.cloud.lock:
                if str(droplet_id) not in self.cloud.state["droplets"]:
                    return "errored"
                self.cloud.state["droplets"][str(droplet_id)]["name"] = action["params"]["name"]
                self.cloud.save()
            return self._pause(rt)
        graceful = GRACEFUL_STOP.get(type_)
        if graceful is None:
            return "errored"
        if not self.power.stop(droplet_id, rt, graceful=graceful):
            return "errored"
        if type_ in ("power_off", "shutdown"):
            return "completed"
        return self.power.boot(droplet_id, rt)

    def _pause(self, rt: Runtime) -> Outcome:
        """An action with nothing to wait for still takes a moment, as it does on the real cloud."""
        if self.power.sleep(rt, self.options.action_delay_s):
            return self.power.interrupted(rt)
        return "completed"

    def _perform_reserved_ip(self, action: Json) -> Outcome:
        if self.cloud.closing.wait(self.options.action_delay_s):
            return "interrupted"
        params = action["params"]
        with self.cloud.lock:
            r = self.cloud.state["reserved_ips"].get(params["ip"])
            if r is None:
                return "errored"
            droplet_id = params.get("droplet_id")
            if droplet_id is not None and str(droplet_id) not in self.cloud.state["droplets"]:
                return "errored"
            r["droplet_id"] = droplet_id
            self.cloud.save()
        return "completed"

