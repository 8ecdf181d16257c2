"""Everything argoctl creates on a host is recognisable by these names and ranges.

`down` and reconcile touch only objects that match them, so a user's own links,
routes, rules and nft tables are never changed. Change them only with care: a
host that ran an older argoctl must still be cleaned up by a newer one.
"""

# Links: one tunnel device per peer, named LINK_PREFIX + peer name, and
# carrying IFLA_IFALIAS = ALIAS_PREFIX + peer name. Both must match for
# argoctl to consider a link its own.
LINK_PREFIX = "ag-"
ALIAS_PREFIX = "argoctl:"
IFNAMSIZ = 15  # usable characters in an interface name
MAX_PEER_NAME = IFNAMSIZ - len(LINK_PREFIX)  # 12

# Routes argoctl installs carry this rtm_protocol (iproute2 shows the number;
# contrib/rt_protos.d/argoctl.conf names it). babeld uses 42, bird 12, zebra 11..
RTPROT_ARGOCTL = 176

# Every peer's table also holds a blackhole default route of this metric (the
# tunnel's route has a lower one, so it wins while it exists): marked traffic
# never falls through to the main table.
DROP_METRIC = 4278190080   # 0xff000000: far below any metric a user or daemon sets

# Default routing tables and rule priorities: path id N uses
# table TABLE_BASE + N and rule priority RULE_PRIORITY_BASE + N.
# Path id 0 is "direct" (its rule looks up the main table).
DEFAULT_TABLE_BASE = 7200
DEFAULT_RULE_PRIORITY_BASE = 7200
MAX_PATH_ID = 254  # peers get ids 1..254
# One more rule, at RULE_PRIORITY_BASE + DROP_RULE_OFFSET (after every path's):
# `not fwmark 0/MASK blackhole`. A packet carrying a path's mark whose rule is
# gone is dropped there instead of reaching the main table with its LAN source.
DROP_RULE_OFFSET = MAX_PATH_ID + 1
DIRECT_PATH_ID = 0
RESERVED_TABLES = frozenset({0, 253, 254, 255})  # unspec, default, main, local

# fwmark: a path's mark is its id shifted into the bits of the mask; the
# direct path uses the all-ones value of the field (so an unmarked packet,
# mark 0 in the field, is distinguishable from "steered direct"). The default,
# bits 0-7, is outside what Tailscale (0xff0000 in its rules), Cilium (0xf00),
# Calico (0xffff0000), kube-proxy (0xc000) and Docker (none) match on: see
# docs/design.md. `up` refuses to run beside a rule that uses these bits.
DEFAULT_FWMARK_MASK = 0x000000FF

# nftables: one table of our own per family-agnostic "inet".
NFT_TABLE = "argoctl"
NFT_FAMILY = "inet"

# bpffs pins (programs and maps) live under this directory.
BPF_PIN_DIR = "/sys/fs/bpf/argoctl"

# Runtime state lives here (per network namespace: RUN_DIR/netns/NAME), every
# file written atomically (runfiles.py): the daemon's live choices, its lock,
# the ranges of the last `up`, the sysctl values from before argoctl, the
# intent journal.
RUN_DIR = "/run/argoctl"
STATE_FILE = "state.json"
LOCK_FILE = "argoctl.pid"
ROUTING_FILE = "routing.json"
SAVED_SYSCTLS_FILE = "saved-sysctls.json"
INTENT_FILE = "intent.json"

# The host's config when no -c / FILE is given.
DEFAULT_CONFIG = "/etc/argoctl/argoctl.toml"


def link_name(peer_name: str) -> str:
    return LINK_PREFIX + peer_name


def link_alias(peer_name: str) -> str:
    return ALIAS_PREFIX + peer_name


def mark_shift(mask: int) -> int:
    """Bit position of the lowest set bit of the mask."""
    if mask <= 0:
        raise ValueError("fwmark mask must be non-zero")
    return (mask & -mask).bit_length() - 1


def path_mark(path_id: int, mask: int = DEFAULT_FWMARK_MASK) -> int:
    """The fwmark value that selects path `path_id` (0 = direct)."""
    shift = mark_shift(mask)
    field_max = mask >> shift
    value = field_max if path_id == DIRECT_PATH_ID else path_id
    if value > field_max:
        raise ValueError(f"path id {path_id} does not fit fwmark mask {mask:#x}")
    return (value << shift) & mask
