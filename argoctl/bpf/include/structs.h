/* Every struct shared between the eBPF programs and argoctl/maps.py.
 *
 * Layout rules: fixed-width types only, explicit padding, no implicit holes,
 * so ctypes mirrors match byte for byte (tests/bpf/test_layout.py checks). */
#ifndef ARGOCTL_STRUCTS_H
#define ARGOCTL_STRUCTS_H

/* LPM trie keys: prefixlen first, then the address in network byte order. */
struct lpm_v4_key {
    __u32 prefixlen;
    __u8 addr[4];
};

struct lpm_v6_key {
    __u32 prefixlen;
    __u8 addr[16];
};

/* One path of a destination. `mark` is the full fwmark value (already
 * shifted into the mask), so the program only ORs it in. */
struct path_entry {
    __u32 mark;
    __u16 weight;     /* relative share of new flows; 0 = take no new flows */
    __u8 state;       /* PATH_UP / PATH_DOWN */
    __u8 path_id;     /* index into path_stats */
};

/* A destination's path set, replaced in one map update (hash map without
 * preallocation: readers see the old or the new value, never a mix). */
struct pathset {
    __u32 generation; /* bump to move every pinned flow of the destination */
    __u8 count;       /* valid entries in paths[] */
    __u8 pad[3];
    struct path_entry paths[MAX_PATHS];
};

/* Flow key: IPv4 addresses live in the first 4 bytes of the 16. */
struct flow_key {
    __u8 saddr[16];
    __u8 daddr[16];
    __u16 sport;      /* network byte order */
    __u16 dport;      /* network byte order */
    __u8 proto;
    __u8 family;      /* 4 or 6 */
    __u8 pad[2];
};

/* A pinned flow: where it went and under which generation. */
struct flow_val {
    __u32 dest_id;
    __u32 generation;
    __u32 mark;
    __u32 lpm_epoch;  /* settings.lpm_epoch when the destination was looked up */
    __u8 path_idx;
    __u8 path_id;
    __u8 flags;       /* FLOW_* */
    __u8 reroutes;    /* protective re-pins so far (<= MAX_REROUTES) */
    __u8 tried;       /* bit i: the flow has been on path index i */
    __u8 pad[3];
    __u64 syn_ns;     /* time of the last SYN sent, 0 once answered */
    __u64 seen_ns;    /* last packet (within PIN_TOUCH_NS), coarse clock; 0: TCP */
};

/* Runtime settings, index 0 of an array map, written by maps.py. */
struct settings {
    __u32 abi;        /* ARGOCTL_ABI of the writer */
    __u32 fwmark_mask;/* bits of skb->mark / SO_MARK that select a path */
    __u32 lpm_epoch;  /* bumped when prefixes are remapped: pinned flows re-resolve */
    __u32 flags;
};

/* What steer_sock set on a socket (by socket cookie): lets it re-mark its own
 * sockets and lets the sock_ops program credit the handshake to the path and
 * move the socket on an RTO in SYN_SENT (protective reroute). */
struct sock_mark {
    __u32 mark;       /* the mark field value we set */
    __u32 path_id;
    __u32 dest_id;    /* the destination whose path set the mark came from */
    __u8 path_idx;    /* index of the path in that set */
    __u8 reroutes;    /* protective re-pins so far (<= MAX_REROUTES) */
    __u8 tried;       /* bit i: the socket has been on path index i */
    __u8 pad;
};

/* Per-CPU counters. */
struct dest_stats {
    __u64 packets;
    __u64 bytes;
};

struct path_stats {
    __u64 packets;
    __u64 bytes;
    __u64 syns;         /* TCP SYNs steered onto the path (forwarded + local connects) */
    __u64 synacks;      /* SYN-ACKs seen coming back for them */
    __u64 rtt_sum_ns;   /* handshake RTT samples (first SYN answered) */
    __u64 rtt_count;
    __u64 flows_moved;  /* pinned flows moved off the path (down / removed) */
    __u64 sockets;      /* local sockets marked for the path (cgroup hooks) */
    __u64 reroutes;     /* handshakes moved off the path: SYN unanswered for an RTO */
};

#endif
