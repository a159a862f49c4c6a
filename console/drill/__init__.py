"""`redwarden drill`: a failover drill with a Sentinel-aware writer running through it, and its timeline.

Layer: application (a tool), over a pure core. The modules, bottom to top:

    pure core   model       the vocabulary (steps, faults, write outcomes), errors, the controller's
                            incidents and actions as snapshots, the victim of a fault
                writes      write samples: write unavailability and lost-write arithmetic
                orders      the order of the writer's Sentinel list: the controller's, reversed, shuffled
                observer    the `Observer`: what the controller shows after the fault, as timeline steps
                result      result assembly, the summary over runs, and both renderings
    adapters    controller_api  `ControllerApi`: the controller's HTTP API for one cluster (a `ClusterSource`)
                writer      `SentinelKeyStore` (redis-py's Sentinel client) and the `Writer` thread over it
                targets     where a drill acts: `Endpoints`, `FaultTarget`, `CloudTarget` (DigitalOcean only)
    the run     run         `run_drill`, `run_drills`: the adapters and the core wired for one run, or N
                command     `main`: the `redwarden drill` command (options, real-cluster endpoints, exit codes)

The cluster itself comes as a `console.cluster.ClusterSnap`, judged by `console.cluster.redundancy_problem`,
the same snapshot and predicate `redwarden cluster create` waits on. The core takes every time as an
argument and does no I/O. The sandbox's fault target (`SandboxTarget`: signals and the local
DigitalOcean) lives in `sandbox.drill_target`.

One run: wait for a healthy cluster; list the Sentinels for the writer in the run's order (relative to
the controller's, from its cluster status: an application's client asks them in its own order, and right
after a failover they do not all know the new master at once); start the writer (SET `drill:<run>:<n>`
then `WAIT 1`, every 10 ms, on one connection); inject the fault; poll the controller until full
redundancy has held for a few seconds (or the timeout); stop the writer; read every acknowledged key back
from the master.

The steps, and where each comes from (times are Unix seconds; the controller's own timestamps are used
where it keeps them, which assumes its clock and ours agree, as they do on the sandbox):

    fault                the moment just before the fault was injected (our clock)
    first_finding        the earliest of: a finding not present before the fault first shown by
                         GET /v1/clusters/{name} (our clock, at poll resolution), and the `first_seen_at`
                         of an incident first seen after the fault (controller clock)
    alert_sent           `opened_at` of the first incident opened after the fault: the moment the
                         controller confirmed it and put its alert in the durable outbox. The API does not
                         expose outbox deliveries, so this is "alert enqueued", not "alert delivered"
    new_master           the cluster's master (as the Sentinels' majority names it) differs from the old one
    writes_accepted      the first write acknowledged by WAIT 1 that ends the longest outage (writer's clock);
                         null when no write was ever refused after the fault
    replacement_created  a CreateReplacement action that succeeded (its `finished_at`), or a node name
                         that was not there before appearing, whichever is first
    replica_in_sync      the replacement (destroy-*) or the faulted node (kill-/stop-master) reports role
                         replica, link up, replicating the current master
    sentinels_agree      every Sentinel reachable (reachable == expected == nodes before the fault) and all
                         naming the current master
    redundancy_restored  `console.cluster.redundancy_problem` finds nothing with the node count as before:
                         one master, every other node a linked replica of it, Sentinels agreeing and knowing
                         each other, no reprovision or Sentinel reset in flight, health "healthy"; the start
                         of the period over which this held until the drill ended (>= settle_s)

Steps that describe a recovery (the last three) only count once their condition was seen broken after
the fault, or once the master moved: a picture that has not yet changed is not a recovery.
"""
