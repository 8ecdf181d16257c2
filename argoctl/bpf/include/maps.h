/* Map definitions. With -DPIN_DIR="\"/sys/fs/bpf/argoctl\"" every map is pinned
 * there by name: a later load (or a restarted argoctl) opens the same maps, so
 * routes, pinned flows and counters survive a reload. Without PIN_DIR (tests,
 * benchmarks) the maps are private to the loaded object. */
#ifndef ARGOCTL_MAPS_H
#define ARGOCTL_MAPS_H

#include "consts.h"
#include "structs.h"

#ifdef PIN_DIR
#define AG_MAP(type, k, v, name, max, flags) \
    BPF_TABLE_PINNED(type, k, v, name, max, PIN_DIR "/" #name, flags)
#else
#define AG_MAP(type, k, v, name, max, flags) \
    BPF_F_TABLE(type, k, v, name, max, flags)
#endif

AG_MAP("lpm_trie", struct lpm_v4_key, __u32, dst_v4, MAX_PREFIXES_V4, BPF_F_NO_PREALLOC);
AG_MAP("lpm_trie", struct lpm_v6_key, __u32, dst_v6, MAX_PREFIXES_V6, BPF_F_NO_PREALLOC);
AG_MAP("hash", __u32, struct pathset, pathsets, MAX_DESTS, BPF_F_NO_PREALLOC);
AG_MAP("lru_hash", struct flow_key, struct flow_val, flows, MAX_FLOWS, 0);
AG_MAP("array", __u32, struct settings, settings, 1, 0);
AG_MAP("percpu_array", __u32, struct dest_stats, dest_stats, MAX_DESTS, 0);
AG_MAP("percpu_array", __u32, struct path_stats, path_stats, MAX_PATH_IDS, 0);
/* socket cookie -> the mark steer_sock set on it (steer_sock.c, steer_sockops.c) */
AG_MAP("lru_hash", __u64, struct sock_mark, sock_marks, MAX_FLOWS, 0);

#endif
