"""The agent's cycle: collect Redis, Sentinel and host health, build one report, push the latest.

Layer: application. One `run_cycle` reads like a paragraph and returns a sentence for the log. `run_forever`
schedules it (APScheduler) every `report_interval_s`, and the urgent probe every `PROBE_INTERVAL_S`, each
never two at once and skipping (not queueing) the runs a slow cycle overlapped. It speaks to Redis and
Sentinel through redis-py (`agent.redis_client`). Its imports are the agent's steady memory;
`tests/test_agent_footprint.py` keeps the controller's, the console's and the sandbox's code and libraries out
of it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import requests
import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from redis.exceptions import AuthenticationError, RedisError

from agent import __version__
from agent.collect_host import collect_host, wait_exit
from agent.collect_redis import collect_redis, collect_sentinel
from agent.config import AgentConfig, AgentSecrets, ssl_context, users_state_path
from agent.directives import DirectiveRunner, LocalRedisControl
from agent.fence import LocalFence, silence_ms
from agent.push import Pusher
from agent.redis_client import command, error_message, raw_client
from agent.services import ServiceError, services_for
from agent.session import agent_session
from agent.urgent import PROBE_INTERVAL_S, Budget, Signal, decide, read_signal, signal_of
from protocol.acl import NodeUsers
from protocol.report import Identity, RedisHealth, Report, SentinelHealth, report_to_json
from protocol.settings import secret_path, store_private

log = structlog.get_logger("redwarden.agent")

METADATA_RETRY_S = 60.0
WATCH_IDLE_S = 0.5  # the exit watch re-reads which pid to watch at least this often


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        secrets: AgentSecrets,
        clock: Callable[[], float] = time.time,
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._redis = raw_client(config.connect_host, config.redis_port, secrets.redis_password, config.timeout_s,
                                 username=secrets.redis_username)
        # sends no AUTH: whether Redis answers anyone who reaches its port (the report's open_without_auth)
        self._anonymous_redis = raw_client(config.connect_host, config.redis_port, None, config.timeout_s)
        self._sentinel = raw_client(
            config.connect_host, config.sentinel_port, secrets.sentinel_password, config.timeout_s
        )
        self._secrets = secrets
        # one control of the local Redis for the directives and the local fence: set_users swaps its client
        self._control = LocalRedisControl(self._redis)
        self._pusher = Pusher(
            config.controller_url, config.cluster, config.node, secrets.node_key, config.push_timeout_s,
            config.max_backoff_s, clock=clock, ssl_context=ssl_context(config),
        )
        self._directives = (
            DirectiveRunner(services_for(config, config_path), config.node, secrets.node_key,
                            redis=self._control, confirmed_master=self.confirmed_master, clock=clock,
                            set_users=self.set_users)
            if config_path else None
        )
        self._fence = LocalFence(config.down_after_ms) if config.local_fence else None
        self._fence_clock: Callable[[], float] = time.monotonic
        self._fence_error: str | None = None
        self._last_report: Report | None = None
        self._seq = 0
        self._droplet_id = config.droplet_id
        self._metadata_tried_at: float | None = None
        self._last_push_ok: bool | None = None
        self._cycle_lock = threading.Lock()  # the report job and the process watch never overlap
        self._watched_pid: int | None = None  # the redis-server seen running at the last report
        self._reported_signal: Signal | None = None  # role and Sentinel view at the last report (agent/urgent.py)
        self._extra_budget: Budget | None = None  # the reports outside the schedule that may go (None: all)

    def _identity(self) -> Identity:
        if self.config.metadata_url and self._droplet_id is None:
            now = self._clock()
            if self._metadata_tried_at is None or now - self._metadata_tried_at >= METADATA_RETRY_S:
                self._metadata_tried_at = now
                self._droplet_id = fetch_droplet_id(self.config.metadata_url, self.config.timeout_s)
        return Identity(
            cluster=self.config.cluster,
            node=self.config.node,
            address=self.config.address,
            redis_port=self.config.redis_port,
            sentinel_port=self.config.sentinel_port,
            droplet_id=self._droplet_id,
            agent_version=__version__,
        )

    def collect(self) -> Report:
        started = time.perf_counter()
        self._seq += 1
        redis = collect_redis(self._redis, self._anonymous_redis)
        sentinel = collect_sentinel(self._sentinel, [self.config.master_name])
        host = collect_host(self.config.redis_data_dir, self.config.redis_pidfile, self.config.sentinel_pidfile)
        if self._fence is not None:
            redis = dataclasses.replace(redis, fenced_locally=self._fence_step(redis, sentinel))
        return Report(
            identity=self._identity(),
            collected_at=self._clock(),
            seq=self._seq,
            redis=redis,
            sentinel=sentinel,
            host=host,
            collect_ms=round((time.perf_counter() - started) * 1000, 3),
            acks=self._directives.acks() if self._directives else (),
        )

    def _fence_step(self, redis: RedisHealth, sentinel: SentinelHealth) -> bool:
        """The local fence (agent/fence.py): pause this master's writes while it has been alone for
        down-after, renewed each cycle; returns whether its writes are paused now."""
        assert self._fence is not None
        view = sentinel.master(self.config.master_name)
        step = self._fence.step(silence_ms(redis, sentinel, self.config.master_name), self._fence_clock(),
                                view.down_after_ms if view else None)
        pause_ms = max(1000, round(2000 * self.config.report_interval_s))
        try:
            if step.action == "start":
                log.warning("fence.started", alone_ms=step.alone_ms, pause_ms=pause_ms,
                            replicas_known=len(view.replicas) if view else 0,
                            sentinels_known=len(view.sentinels) if view else 0)
            if step.action in ("start", "renew"):
                self._control.pause_writes(pause_ms, disconnect=step.action == "start")
                self._fence_error = None
                return True
            if step.action == "end":
                log.info("fence.ended", role=redis.role, replicas_connected=len(redis.connected_replicas))
                self._control.unpause()
        except ServiceError as e:
            if str(e) != self._fence_error:  # log what changed, not every second
                log.warning("fence.failed", action=step.action, error=str(e))
            self._fence_error = str(e)
            if step.action == "start":
                self._fence.start_failed()
        return False

    def confirmed_master(self) -> bool:
        """This node's Redis reported itself master, and a strict majority of the Sentinels it knows (its own
        and the peers its own lists) name it now: then no directive demotes it."""
        report = self._last_report
        if report is None or report.redis.role != "master":
            return False
        from agent.bootstrap import ask_sentinels  # only when a replicaof arrives

        own_sentinel = f"{self.config.connect_host}:{self.config.sentinel_port}"
        views = [m for m in report.sentinel.masters if m.name == self.config.master_name]
        peers = [own_sentinel, *(p.address for p in (views[0].sentinels if views else ()))]
        answers = ask_sentinels(peers, self.config.master_name, self._secrets.sentinel_password,
                                self.config.timeout_s)
        own = f"{self.config.address}:{self.config.redis_port}"
        return sum(1 for a in answers if a == own) * 2 > len(peers)

    def set_users(self, users: NodeUsers) -> None:
        """The migration to ACL users or a rotation (`set_redis_users`): check the monitor password against this
        node's Redis, store the users (under systemd in the agent's state directory; else where bootstrap stores
        them: the users file, the monitor password as the agent's Redis password), then connect as `monitor`.
        Nothing is stored or switched if a step fails; the errors name files and users, never a password."""
        probe = raw_client(self.config.connect_host, self.config.redis_port, users.monitor, self.config.timeout_s,
                           username="monitor")
        try:
            if command(probe, "PING") != "PONG":
                raise ServiceError("this node's Redis did not answer PING as the monitor user")
        except AuthenticationError:
            raise ServiceError("this node's Redis refuses the monitor user's password: its users are not set") from None
        except (OSError, RedisError) as e:
            raise ServiceError(f"cannot reach this node's Redis as monitor: {error_message(e, probe)[:200]}") from None
        finally:
            probe.close()  # a closed redis-py client connects again at its next command
        state = users_state_path(self.config)
        if state is not None:  # systemd: the agent's own StateDirectory (/etc/redwarden is not writable to it)
            places: tuple[tuple[Path, str], ...] = ((state, users.to_json()),)
        elif self.config.redis_users_file and self.config.redis_password_file:  # no systemd: where bootstrap wrote
            places = ((secret_path(self.config.redis_users_file), users.to_json()),
                      (secret_path(self.config.redis_password_file), users.monitor))
        else:
            raise ServiceError("state_dir (or redis_users_file and redis_password_file) must be set to store the users")
        for path, text in places:
            try:
                store_private(path, text + "\n")
            except OSError as e:
                raise ServiceError(f"cannot store the users in {path}: {e.strerror or type(e).__name__} (under "
                                   "systemd the unit's StateDirectory is the agent's state_dir)") from None
        # directives run inside the report cycle (its lock held): the next collection uses the checked client
        old, self._redis = self._redis, probe
        self._control.client = probe
        old.close()
        self._secrets = dataclasses.replace(self._secrets, redis_password=users.monitor, redis_username="monitor")
        log.info("agent.redis_user_changed", user="monitor")

    def run_cycle(self) -> str:
        with self._cycle_lock:
            return self._report()

    def watch(self, timeout_s: float = 0.0) -> str | None:
        """Between reports: wait up to `timeout_s` for the redis-server seen running at the last report
        to exit; if it has, report now, so the controller hears of a dead master at once rather than
        within a report interval. Returns the report's sentence, or None when there was nothing to say."""
        pid = self._watched_pid
        if pid is None or not wait_exit(pid, timeout_s) or pid != self._watched_pid:
            return None
        log.warning("redis.exited", pid=pid)
        return self.run_cycle()

    def probe(self) -> str | None:
        """Between reports: read this node's role and its Sentinel's view of the master (two round trips) and
        report now if they changed since the last report, within a budget of extra reports (agent/urgent.py).
        Returns the report's sentence, or None when there was nothing to say."""
        with self._cycle_lock:
            signal = read_signal(self._redis, self._sentinel, self.config.master_name)
            now = time.monotonic()
            spent = decide(self._reported_signal, signal, now, self._extra_budget)
            if spent is None:
                return None
            self._extra_budget = spent
            log.info("report.urgent", role=signal.role, master=signal.master, flags=",".join(signal.flags),
                     promoted=",".join(signal.promoted))
            return self._report()

    @property
    def watched_pid(self) -> int | None:
        return self._watched_pid

    def _report(self) -> str:
        report = self.collect()
        self._last_report = report
        self._reported_signal = signal_of(report.redis, report.sentinel, self.config.master_name)
        proc = report.host.redis_process
        self._watched_pid = proc.pid if proc.alive else None
        if not self._pusher.due(self._clock()):
            return f"report {report.seq} kept: controller backoff until {self._pusher.next_attempt_at:.1f}"
        result = self._pusher.push(report_to_json(report))
        if result.ok and self._directives is not None:
            self._directives.delivered(report.acks)
            directives = (result.body or {}).get("directives") or []
            if isinstance(directives, list) and directives:
                self._directives.run(directives)
        if result.ok != self._last_push_ok:  # log transitions, not every second
            if result.ok:
                log.info("push.recovered" if self._last_push_ok is False else "push.started", seq=report.seq)
            else:
                log.warning("push.failed", seq=report.seq, status=result.status, error=result.error)
            self._last_push_ok = result.ok
        if result.ok:
            return f"report {report.seq} pushed (redis {'up' if report.redis.reachable else 'down'})"
        return f"report {report.seq} not pushed: {result.error}"

    def close(self) -> None:
        self._pusher.close()
        self._redis.close()
        self._anonymous_redis.close()
        self._sentinel.close()


def fetch_droplet_id(metadata_url: str, timeout_s: float) -> int | None:
    """The droplet id from DigitalOcean's metadata service (`GET {url}/id`), or None."""
    try:
        with agent_session() as session:
            resp = session.get(metadata_url.rstrip("/") + "/id", timeout=(timeout_s, timeout_s),
                               allow_redirects=False)
        if resp.status_code >= 400:
            log.warning("metadata.failed", error=f"HTTP {resp.status_code}")
            return None
        return int(resp.text.strip())
    except requests.RequestException as e:
        log.warning("metadata.failed", error=type(e).__name__)
        return None
    except ValueError as e:
        log.warning("metadata.failed", error=type(e).__name__)
        return None


def new_scheduler() -> BackgroundScheduler:
    """The agent's scheduler: on UTC (a droplet's local zone, through tzlocal, decides nothing here), its jobs
    in a pool of two threads (the report and the probe; they take turns on the cycle's lock anyway)."""
    return BackgroundScheduler(timezone=timezone.utc, executors={"default": ThreadPoolExecutor(max_workers=2)})


def add_every(scheduler: BackgroundScheduler, name: str, interval_s: float, job: Callable[[], object],
              failed_event: str) -> None:
    """Run `job` now and then every `interval_s`, one run at a time: a run due while the last one is still
    going is skipped (`max_instances=1`), runs due together are one (`coalesce`), and one that starts later
    than its grace is dropped, so a slow cycle (a server timing out) never causes a burst of catch-up cycles.
    A failing run is logged (`failed_event`, with the traceback) and the next one runs."""

    def run() -> None:
        try:
            job()
        except Exception:
            log.exception(failed_event)

    scheduler.add_job(run, "interval", seconds=interval_s, id=name, name=name,
                      next_run_time=datetime.now(timezone.utc), max_instances=1, coalesce=True,
                      misfire_grace_time=max(1, math.ceil(interval_s)))  # whole seconds (APScheduler 3)


def _watch_redis_exit(agent: Agent, stop: threading.Event) -> None:
    """Report the moment the watched redis-server exits. A thread of its own, not a scheduled job: it blocks
    in a wait on that process (`wait_exit`) and wakes when it ends, where a job would only look at its next
    tick."""
    while not stop.is_set():
        try:
            if agent.watched_pid is None:
                stop.wait(WATCH_IDLE_S)
            else:
                agent.watch(WATCH_IDLE_S)
        except Exception:
            log.exception("watch.failed")
            stop.wait(WATCH_IDLE_S)


def run_forever(agent: Agent) -> None:
    """Run `run_cycle` every interval, and the urgent probe (a role or Sentinel view change is reported at
    once: agent/urgent.py) between, until SIGTERM or SIGINT; then let a cycle under way finish, and close."""
    stop = threading.Event()
    scheduler = new_scheduler()
    add_every(scheduler, "report", agent.config.report_interval_s, agent.run_cycle, "cycle.failed")
    add_every(scheduler, "urgent-probe", PROBE_INTERVAL_S, agent.probe, "probe.failed")
    if agent.config.watch_redis_exit:
        threading.Thread(target=_watch_redis_exit, args=(agent, stop), name="redis-exit-watch", daemon=True).start()
    log.info(
        "agent.started",
        cluster=agent.config.cluster,
        node=agent.config.node,
        interval_s=agent.config.report_interval_s,
        pid=os.getpid(),
        version=__version__,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: stop.set())
    scheduler.start()
    try:
        stop.wait()
    finally:
        scheduler.shutdown(wait=True)
        stop.set()
        agent.close()
        log.info("agent.stopped")
