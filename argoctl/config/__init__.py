"""Per-host configuration: the TOML file -> validated, immutable model.

model.py is the contract every other module reads (plan, datapath, engine, lab);
checks.py turns a file into it or raises ConfigError with every problem found,
each with file:line and a hint; rules.py holds the limits the checks apply."""

from argoctl.config.model import *  # noqa: F401,F403
from argoctl.config.model import IPAddress, IPNetwork  # noqa: F401
from argoctl.config.rules import *  # noqa: F401,F403
from argoctl.config.rules import (_DEST_KEYS, _NODE_KEYS, _PEER_KEYS,  # noqa: F401
                                  _POLICY_RULES, _PROBE_KEYS, _FLEET_KEYS, _FLEET_RULES)
from argoctl.config.checks import check, load  # noqa: F401
