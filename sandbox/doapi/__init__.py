"""A local DigitalOcean API whose droplets really boot: the sandbox's cloud.

Layer: sandbox. It answers the `/v2` endpoints redwarden uses with the shapes of the official OpenAPI
description (droplets and their actions, actions, reserved IPs, tags, firewalls, VPCs, regions, sizes,
images), over HTTPS with a CA made per sandbox, behind a bearer token, with DigitalOcean's error bodies
(`{"id", "message"}`), rate-limit headers and pagination links. Faults are injected at run time through
`/_sandbox/faults`.

A droplet is a directory and a loopback address. Creating one claims the next free `127.0.0.N` for the
sandbox (`sandbox.addresses`), makes `<sandbox>/droplets/<name>-<id>/root/` its filesystem root and runs
its `user_data`, a cloud-config subset (see `cloud_config.parse_user_data`): `write_files` rooted in that
directory, then `runcmd`, each command in its own session with the droplet's environment markers
(`REDWARDEN_DROPLET_ROOT`, `_ID`, `_NAME`, `_ADDRESS`). The droplet owns every process whose environment
carries its id and root, so power_off kills exactly those, whatever daemonized itself. A reboot does not
run cloud-init again: it runs the executables in `<root>/etc/redwarden/boot.d/`, in name order.

Layout under the sandbox dir:

    doapi/state.json             droplets, actions, reserved IPs, tags, firewalls, VPCs (atomic writes)
    doapi/tls/                   ca.pem (give it to clients), ca.key, server.pem, server.key
    doapi/endpoint.json          {"url", "ca_path", "pid"} of the running API (CLI only)
    droplets/<name>-<id>/        root/ (the droplet's /), cloud-init-output.log
    destroyed/<name>-<id>/       what a destroyed droplet left, for post-mortems

Run it with `python -m sandbox.doapi --dir SANDBOX --host 127.0.0.N --port P --token-file F` (prints its
URL once listening; SIGTERM stops the API, not the droplets), or in-process with `server.start_doapi(...)`.

The modules, bottom to top:

    wire          ApiRequest, ApiResponse, ApiError (DigitalOcean's error shape), JSON bodies, pagination
    catalog       regions, sizes, images, and their read-only endpoints
    ratelimit     the token bucket behind the ratelimit-* headers and 429s
    faults        what `/_sandbox/faults` injects, and its validation
    tls           the per-sandbox CA and the server certificate
    cloud_config  the user_data subset a droplet runs on its first boot
    processes     a droplet's processes: their environment markers, finding and killing them
    state         DoApiOptions, and the Cloud every part shares: persisted state, lock, faults, runtimes
    power         boot, stop and destroy a droplet's processes
    runner        actions in their threads, from in-progress to an outcome; resume and close
    vpcs, tags, droplets, actions, reserved_ips, firewalls    one handler class per family of /v2 resources
    admin         the /_sandbox/ endpoints
    api           DoApi: authentication, rate limit, injected failures, and the route table
    server        the ASGI app, uvicorn, start_doapi and DoApiHandle (in-process)
    __main__      python -m sandbox.doapi (the process `sandbox.cluster` runs)

Nothing is imported here, so `sandbox.doapi.processes` (what `sandbox.cluster` needs) comes without the
server's dependencies.
"""
