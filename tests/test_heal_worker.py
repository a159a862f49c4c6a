"""The heal worker: healing on its own thread, so a slow cloud call never holds up the watch cycle, and
after one the healer acts on the latest view, not on the backlog."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

from controller.app.healer import HealWorker
from controller.core.findings import Finding
from controller.core.view import ClusterView
from tests.factories import scenario_view
from tests.helpers import wait_until


class SlowHealer:
    """Its first step blocks until released, like a DigitalOcean call that takes its time."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.seen: list[float] = []

    def step(self, view: ClusterView, findings: Sequence[Finding], now: float) -> str:
        self.seen.append(now)
        if len(self.seen) == 1:
            self.release.wait(30)
        return "stepped"


def at(now: float) -> ClusterView:
    return dataclasses.replace(scenario_view("healthy"), now=now)


def test_a_slow_step_blocks_no_submitter_and_then_only_the_latest_view_is_healed() -> None:
    healer = SlowHealer()
    worker = HealWorker(healer)  # type: ignore[arg-type]
    worker.start()
    try:
        worker.submit(at(1.0), (), 1.0)
        wait_until(lambda: healer.seen == [1.0], 10, "the first step running")
        submitter = threading.Thread(target=lambda: [worker.submit(at(t), (), t) for t in (2.0, 3.0)])
        submitter.start()
        submitter.join(timeout=10)
        assert not submitter.is_alive()  # the watch cycle goes on while the healer waits on the cloud
        assert healer.seen == [1.0]
        healer.release.set()
        wait_until(lambda: len(healer.seen) == 2, 10, "the step after the slow one")
        assert healer.seen == [1.0, 3.0]  # 2.0 was superseded before the healer got to it
    finally:
        healer.release.set()
        worker.close()
