/* cgroup sock_ops, on the cgroup of steer_sock's hooks: the TCP events of the
 * local sockets steer_sock marked.
 *
 * - TCP_CONNECT_CB (before the first SYN): a socket we marked gets the RTO
 *   callback, and only such a socket (the flag is per socket).
 * - RTO_CB in SYN_SENT (protective reroute): the kernel calls it from the
 *   retransmit timer before it retransmits the SYN, so a new SO_MARK (which
 *   also drops the socket's cached route) sends that very retransmission down
 *   the next usable path. Bounded per socket; counted against the path left.
 *   Established connections are never moved: their packets would reach the
 *   origin from another address behind a masquerading relay.
 * - ACTIVE_ESTABLISHED_CB: the SYN-ACK and the kernel's handshake RTT count for
 *   the socket's path (the forwarded-traffic equivalent is passive_tc), and the
 *   RTO callback is switched off again.
 *
 * Oldest kernel: 5.12. RTO_CB, bpf_sock_ops_cb_flags_set and skops->state need
 * 4.16, bpf_get_socket_cookie in sock_ops 4.19, bpf_getsockopt(SO_MARK) 5.12;
 * the table is in docs/design.md (run on 6.1 in the VM, 6.18 on the host). */
#include <uapi/linux/bpf.h>
#include <uapi/linux/in.h>

#include "include/steer.h"

#define SOL_SOCKET_ 1
#define SO_MARK_ 36
#define TCP_SYN_SENT_ 2      /* BPF_TCP_SYN_SENT */

static __always_inline void reroute_socket(struct bpf_sock_ops *skops, struct sock_mark *sm)
{
    struct settings *s = get_settings();
    if (!s || !may_reroute(s, sm->reroutes))
        return;
    __u32 mask = s->fwmark_mask;
    __u32 cur = 0;
    if (bpf_getsockopt(skops, SOL_SOCKET_, SO_MARK_, &cur, sizeof(cur)))
        return;
    if ((cur & mask) != sm->mark)
        return;   /* its owner re-marked it since: not ours to move */
    __u32 dest_id = sm->dest_id;
    struct pathset *ps = pathsets.lookup(&dest_id);
    if (!ps)
        return;
    __u32 idx = sm->path_idx & (MAX_PATHS - 1);
    int nidx = next_usable(ps, idx, sm->tried | (1u << idx));
    if (nidx < 0)
        return;
    const struct path_entry *ne = &ps->paths[nidx & (MAX_PATHS - 1)];
    __u32 mark = ne->mark & mask;
    __u32 nm = (cur & ~mask) | mark;
    if (bpf_setsockopt(skops, SOL_SOCKET_, SO_MARK_, &nm, sizeof(nm)))
        return;
    struct path_stats *old = get_path_stats(sm->path_id);
    if (old)
        old->reroutes++;
    struct path_stats *st = get_path_stats(ne->path_id);
    if (st)
        st->syns++;     /* the retransmitted SYN goes out on the new path */
    sm->mark = mark;
    sm->path_id = ne->path_id;
    sm->path_idx = nidx;
    sm->tried |= 1u << (nidx & (MAX_PATHS - 1));
    sm->reroutes++;
}

static __always_inline void established(struct bpf_sock_ops *skops, struct sock_mark *sm)
{
    bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_RTO_CB_FLAG);
    struct path_stats *st = get_path_stats(sm->path_id);
    if (!st)
        return;
    st->synacks++;
    /* srtt_us holds 8x the RTT in microseconds; 0 = no sample (Karn: the SYN
     * was retransmitted and there were no timestamps). */
    if (skops->srtt_us && !skops->total_retrans) {
        st->rtt_sum_ns += (__u64)(skops->srtt_us >> 3) * 1000;
        st->rtt_count++;
    }
}

int sock_ops(struct bpf_sock_ops *skops)
{
    __u32 op = skops->op;
    if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_RTO_CB &&
        op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
        return 1;
    __u64 cookie = bpf_get_socket_cookie(skops);
    struct sock_mark *sm = sock_marks.lookup(&cookie);
    if (!sm)
        return 1;   /* not a socket we marked */
    if (op == BPF_SOCK_OPS_TCP_CONNECT_CB)
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_RTO_CB_FLAG);
    else if (op == BPF_SOCK_OPS_RTO_CB) {
        /* args[2]: the connection gives up now; nothing left to move. */
        if (skops->state == TCP_SYN_SENT_ && !skops->args[2])
            reroute_socket(skops, sm);
    } else
        established(skops, sm);
    return 1;
}
