"""The order of the writer's Sentinel list: the controller's, reversed, or shuffled.

An application's Sentinel client asks the Sentinels in the order it lists them and takes the first
acceptable answer (redis-py: the master not flagged down). Right after a failover the Sentinels do not
all know the new master at the same moment, so the write unavailability an application sees depends on
that order; a drill measures each and reports the worst.

Layer: the drill's pure core. The controller's order comes from its cluster status
(`ClusterSnap.sentinel_order`); randomness is an injected `random.Random`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

SentinelOrder = Literal["controller", "reversed", "shuffled"]
SENTINEL_ORDERS: tuple[SentinelOrder, ...] = ("controller", "reversed", "shuffled")
ORDER_CHOICES = (*SENTINEL_ORDERS, "all")  # the --sentinel-order option

Address = tuple[str, int]


def planned_orders(option: str, runs: int) -> list[SentinelOrder]:
    """The order of each run: `runs` runs of one order, or with "all" `runs` rounds of every order,
    interleaved (controller, reversed, shuffled, controller, ...) so that each order meets each master."""
    if option == "all":
        return [o for _ in range(runs) for o in SENTINEL_ORDERS]
    order = next((o for o in SENTINEL_ORDERS if o == option), None)
    if order is None:
        raise ValueError(f"no Sentinel order {option!r}: one of {', '.join(ORDER_CHOICES)}")
    return [order] * runs


def controller_order(sentinels: Sequence[Address], order: Sequence[str]) -> tuple[tuple[Address, ...], bool]:
    """The Sentinels sorted as the controller lists them ("ip:port"); those it does not list keep their
    place after the others. Also whether the controller's order was known for all of them."""
    rank = {address: i for i, address in enumerate(order)}
    keyed = sorted(enumerate(sentinels), key=lambda p: (rank.get(f"{p[1][0]}:{p[1][1]}", len(rank)), p[0]))
    return tuple(s for _, s in keyed), bool(sentinels) and all(f"{h}:{p}" in rank for h, p in sentinels)


def order_sentinels(sentinels: Sequence[Address], controller: Sequence[str], order: SentinelOrder,
                    rng: random.Random) -> tuple[Address, ...]:
    """The writer's list in `order`. "shuffled" is a random order that is neither the controller's nor its
    reverse whenever there are enough Sentinels for one (3 and more), so that the three differ."""
    base, _ = controller_order(sentinels, controller)
    if order == "controller":
        return base
    backwards = tuple(reversed(base))
    if order == "reversed":
        return backwards
    shuffled = list(base)
    for _ in range(100):  # with 3 Sentinels, 4 of the 6 orders qualify: this ends at once
        rng.shuffle(shuffled)
        if len(base) < 3 or tuple(shuffled) not in (base, backwards):
            break
    return tuple(shuffled)


def describe_order(order: str, sentinels: Sequence[Address]) -> str:
    return f"{order} order: " + ", ".join(f"{h}:{p}" for h, p in sentinels)


def leader_rank(sentinels: Sequence[str], leader: str | None) -> int | None:
    """Where the writer listed the Sentinel that led the failover (1: first, asked first), None: not listed
    or not known. That Sentinel names the old master in SENTINEL MASTERS until its failover ends."""
    return sentinels.index(leader) + 1 if leader in sentinels else None
