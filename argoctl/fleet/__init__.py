"""Fleet mode (issue 10; docs/fleet.md): agents share what they measure through NATS
JetStream key-value buckets and compose two-hop paths from it.

schema.py      the bus's values: building them, and checking them on the way in
view.py        what this agent knows of the fleet; relay paths composed from legs
bus.py         the nats-py connection in the daemon's event loop (watch, batched puts)
credentials.py the host's NATS credentials file (0600)
agent.py       the daemon's fleet cell: mode, overlay for the engine, probe plan, publishing

Without a [fleet] section the daemon never builds any of this, and nats-py is
never imported (metrics.py reads schema.REASONS only).
"""
