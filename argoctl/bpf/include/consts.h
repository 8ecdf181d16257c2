/* Constants shared by every argoctl eBPF program.
 *
 * Sizes can be overridden with -D at compile time (datapath.py passes the
 * values from the config); the Python side reads the same numbers back from
 * the compiled object's map definitions, so the two never disagree. */
#ifndef ARGOCTL_CONSTS_H
#define ARGOCTL_CONSTS_H

/* Bumped whenever a struct in structs.h changes layout: a running datapath
 * with another ABI is reloaded, never adopted. */
#define ARGOCTL_ABI 4

#define MAX_PATHS 8          /* paths per destination */
#define MAX_PATH_IDS 256     /* path ids 0..254 (+1 spare): index of per-path stats */

#ifndef MAX_DESTS
#define MAX_DESTS 131072     /* destination ids 1..MAX_DESTS-1 */
#endif
#ifndef MAX_PREFIXES_V4
#define MAX_PREFIXES_V4 1048576
#endif
#ifndef MAX_PREFIXES_V6
#define MAX_PREFIXES_V6 262144
#endif
#ifndef MAX_FLOWS
#define MAX_FLOWS 131072     /* LRU: the least recently seen flow is forgotten first */
#endif

/* How many IPv6 extension headers we walk before giving up (fail-open). */
#define MAX_IPV6_EXT 4

/* path_entry.state */
#define PATH_DOWN 0
#define PATH_UP 1

/* flow_val.flags */
#define FLOW_SYN_RETRANS 1   /* SYN seen more than once: RTT sample would be ambiguous */

/* settings.flags */
#define SETTING_REROUTE 1    /* protective reroute: an unanswered SYN moves its flow */

/* Protective reroute: at most this many re-pins per flow (or local socket), each
 * to a path it has not been on; a flow that got nowhere after that stays put. */
#define MAX_REROUTES 2

/* A pin that has seen no packet for this long is no longer a flow: its next
 * packet is placed by the weights. Not TCP (an established connection moved
 * off a masquerading relay breaks); for UDP and the rest it is conntrack's
 * unreplied-UDP timeout, after which the relay's NAT entry is gone anyway, so
 * the pin protects nothing and would send a reused port (a resolver's, a QUIC
 * client's) down a path the weights left long ago. */
#define PIN_IDLE_NS 30000000000ULL
/* flow_val.seen_ns is rewritten at most this often: a write per packet would
 * dirty the shared LRU entry on every CPU. */
#define PIN_TOUCH_NS 1000000000ULL

/* Seed of the flow hash: any odd constant; fixed so a restart keeps choices. */
#define FLOW_HASH_SEED 0x9e3779b9

#endif
