/* The steering decision: prefix -> destination id -> path set -> pinned flow
 * or weighted choice -> fwmark. Shared by the tc and the socket programs. */
#ifndef ARGOCTL_STEER_H
#define ARGOCTL_STEER_H

#include "consts.h"
#include "structs.h"
#include "maps.h"

static __always_inline __u32 mix32(__u32 h)
{
    /* A 32-bit finaliser with good avalanche (lowbias32). */
    h ^= h >> 16;
    h *= 0x7feb352d;
    h ^= h >> 15;
    h *= 0x846ca68b;
    h ^= h >> 16;
    return h;
}

static __always_inline __u32 flow_hash(const struct flow_key *k, __u32 extra)
{
    const __u32 *w = (const __u32 *)k;
    __u32 h = FLOW_HASH_SEED ^ extra;
#pragma unroll
    for (int i = 0; i < (int)(sizeof(*k) / 4); i++)
        h = mix32(h ^ w[i]);
    return h;
}

static __always_inline struct settings *get_settings(void)
{
    __u32 zero = 0;
    struct settings *s = settings.lookup(&zero);
    if (!s || !s->fwmark_mask)
        return 0;   /* never programmed: steer nothing */
    return s;
}

/* Longest-prefix match of the destination address; 0 = no destination. */
static __always_inline __u32 lookup_dest(const struct flow_key *k)
{
    __u32 *id;
    if (k->family == 4) {
        struct lpm_v4_key lk = {.prefixlen = 32};
        __builtin_memcpy(lk.addr, k->daddr, 4);
        id = dst_v4.lookup(&lk);
    } else {
        struct lpm_v6_key lk = {.prefixlen = 128};
        __builtin_memcpy(lk.addr, k->daddr, 16);
        id = dst_v6.lookup(&lk);
    }
    return id ? *id : 0;
}

/* Weighted choice among the paths that are up: the hash picks a point in
 * [0, total weight). Returns the index or -1 (nothing up / all weights 0). */
static __always_inline int choose_path(const struct pathset *ps, __u32 h)
{
    __u32 total = 0;
#pragma unroll
    for (int i = 0; i < MAX_PATHS; i++)
        if (i < ps->count && ps->paths[i].state == PATH_UP)
            total += ps->paths[i].weight;
    if (total == 0)
        return -1;
    __u32 r = h % total;
#pragma unroll
    for (int i = 0; i < MAX_PATHS; i++) {
        if (i < ps->count && ps->paths[i].state == PATH_UP) {
            if (r < ps->paths[i].weight)
                return i;
            r -= ps->paths[i].weight;
        }
    }
    return -1;
}

static __always_inline int path_usable(const struct pathset *ps, __u32 idx, __u32 mark)
{
    if (idx >= MAX_PATHS || idx >= ps->count)
        return 0;
    const struct path_entry *pe = &ps->paths[idx & (MAX_PATHS - 1)];
    return pe->state == PATH_UP && pe->mark == mark;
}

/* Protective reroute: the next path after `cur` in the set's order (wrapping)
 * that is up and not in `tried` (bit i = index i); -1 if there is none. Weight
 * does not matter: a path up with weight 0 takes no new flows but is a fine
 * place for one whose path does not answer. */
static __always_inline int next_usable(const struct pathset *ps, __u32 cur, __u32 tried)
{
    /* Bit masks, not a search loop with early exits: the verifier walks a few
     * straight-line instructions instead of every exit of every iteration. */
    __u32 up = 0;
#pragma unroll
    for (__u32 i = 0; i < MAX_PATHS; i++)
        up |= (__u32)(i < ps->count && ps->paths[i].state == PATH_UP) << i;
    __u32 cand = up & ~tried & ((1u << MAX_PATHS) - 1);
    if (!cand)
        return -1;
    /* The first candidate after `cur` in the set's order, else wrap to the first. */
    __u32 after = cand & ~((2u << (cur & (MAX_PATHS - 1))) - 1);
    __u32 pick = after ? after : cand;
    __u32 bit = pick & (~pick + 1);
    return ((bit & 0xF0) ? 4 : 0) + ((bit & 0xCC) ? 2 : 0) + ((bit & 0xAA) ? 1 : 0);
}

static __always_inline int may_reroute(const struct settings *s, __u8 reroutes)
{
    return (s->flags & SETTING_REROUTE) && reroutes < MAX_REROUTES;
}

static __always_inline void count_dest(__u32 dest_id, __u32 len, __u32 segs)
{
    struct dest_stats *ds = dest_stats.lookup(&dest_id);
    if (ds) {
        ds->packets += segs;
        ds->bytes += len;
    }
}

static __always_inline struct path_stats *get_path_stats(__u32 path_id)
{
    return path_stats.lookup(&path_id);
}

/* Decide the mark for one packet of a flow. Returns the path's mark (to be
 * ORed into the mark field) or 0 to leave the packet untouched. `segs`: wire
 * packets in this skb (GRO merges many into one). */
static __always_inline __u32 steer_flow(struct parsed *p, __u32 len, __u32 segs,
                                        const struct settings *s)
{
    struct flow_key *key = &p->key;
    struct flow_val *fv = flows.lookup(key);
    __u32 dest_id;

    /* A pinned flow skips the trie while the prefixes are unchanged.
     * (ARGOCTL_ALWAYS_LPM: the benchmark's worst case, a trie walk per packet.) */
#ifndef ARGOCTL_ALWAYS_LPM
    if (fv && fv->lpm_epoch == s->lpm_epoch)
        dest_id = fv->dest_id;
    else
#endif
        dest_id = lookup_dest(key);
    if (!dest_id)
        return 0;
    struct pathset *ps = pathsets.lookup(&dest_id);
    if (!ps)
        return 0;

    int is_syn = key->proto == IPPROTO_TCP && (p->tcp_flags & (TCPF_SYN_ | TCPF_ACK_)) == TCPF_SYN_;
    __u64 now = is_syn ? bpf_ktime_get_ns() : 0;
    /* Only non-TCP pins expire, so only they read a clock (a helper call is
     * a sixth of this program's cost); the coarse one, a tick's resolution,
     * is enough for idle times of seconds. TCP: seen stays 0, never expires. */
    __u64 seen = key->proto == IPPROTO_TCP ? 0 : bpf_ktime_get_coarse_ns();
    __u32 mark, path_id;

    if (fv && fv->dest_id == dest_id && fv->generation == ps->generation &&
        path_usable(ps, fv->path_idx, fv->mark) &&
        (!seen || seen - fv->seen_ns <= PIN_IDLE_NS)) {
        /* Established flow on a live path: stays (weights do not matter). */
        mark = fv->mark;
        path_id = fv->path_id;
        if (fv->lpm_epoch != s->lpm_epoch)
            fv->lpm_epoch = s->lpm_epoch;
        if (seen && seen - fv->seen_ns > PIN_TOUCH_NS)
            fv->seen_ns = seen;
        if (is_syn) {
            if (fv->syn_ns) {
                /* The SYN again and no SYN-ACK since: the first one got no
                 * answer within an RTO. Move the flow to the next usable path
                 * at once (this very SYN goes there), counting the move
                 * against the path it leaves. */
                fv->flags |= FLOW_SYN_RETRANS;
                if (may_reroute(s, fv->reroutes)) {
                    __u32 cur = fv->path_idx & (MAX_PATHS - 1);
                    int nidx = next_usable(ps, cur, fv->tried | (1u << cur));
                    if (nidx >= 0) {
                        const struct path_entry *ne = &ps->paths[nidx & (MAX_PATHS - 1)];
                        struct path_stats *old = get_path_stats(path_id);
                        if (old)
                            old->reroutes++;
                        mark = ne->mark;
                        path_id = ne->path_id;
                        fv->mark = mark;
                        fv->path_id = path_id;
                        fv->path_idx = nidx;
                        fv->tried |= 1u << (nidx & (MAX_PATHS - 1));
                        fv->reroutes++;
                    }
                }
            }
            fv->syn_ns = now;
        }
    } else {
        int idx = choose_path(ps, flow_hash(key, 0));
        if (idx < 0)
            return 0;   /* every path down: fail open */
        const struct path_entry *pe = &ps->paths[idx & (MAX_PATHS - 1)];
        mark = pe->mark;
        path_id = pe->path_id;
        if (fv && fv->mark != mark) {
            struct path_stats *old = get_path_stats(fv->path_id);
            if (old)
                old->flows_moved++;
        }
        struct flow_val nv = {};
        nv.dest_id = dest_id;
        nv.generation = ps->generation;
        nv.mark = mark;
        nv.lpm_epoch = s->lpm_epoch;
        nv.path_idx = idx;
        nv.path_id = path_id;
        nv.tried = 1u << (idx & (MAX_PATHS - 1));
        /* (a flow re-placed mid-handshake keeps its count: the bound is per flow) */
        nv.reroutes = fv && fv->dest_id == dest_id ? fv->reroutes : 0;
        nv.syn_ns = now;
        nv.seen_ns = seen;
        flows.update(key, &nv);
    }

    count_dest(dest_id, len, segs);
    struct path_stats *st = get_path_stats(path_id);
    if (st) {
        st->packets += segs;
        st->bytes += len;
        if (is_syn)
            st->syns++;
    }
    return mark;
}

#endif
