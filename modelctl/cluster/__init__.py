"""modelctl on Ray Serve: one fleet of model caches across hosts (``modelctl cluster``).

Ray places the replicas, keeps them healthy and carries requests; each replica runs
modelctl's own daemon state, so what stays loaded is decided by bytes, leases and pins,
never evicted while in use. Only this package imports Ray (the ``ray`` extra); the
rest of modelctl talks to a cluster as to any daemon, over its HTTP URL.

    ingress.py   the HTTP routes for the fleet, routing by model id
    replica.py   one replica: DaemonState and the daemon's app behind a deployment
    registry.py  the fleet registry deployment;  fleet.py  its state and placement
    views.py     the fleet's bodies for the daemon's read routes
    app.py       the Serve application (import path modelctl.cluster.app:build)
    control.py   up / status / down;  options.py  its options and the Serve config
"""
