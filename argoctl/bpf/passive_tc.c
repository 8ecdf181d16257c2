/* tc clsact ingress of tunnel and underlay devices: passive TCP signals. A
 * SYN-ACK answering a SYN that steer_tc sent onto a path counts for that path,
 * with the handshake RTT when the SYN was not retransmitted. Never changes a
 * packet. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "include/parse.h"
#include "include/steer.h"

static __always_inline int passive_skb(struct __sk_buff *skb, int has_l2)
{
    struct parsed p;
    __builtin_memset(&p, 0, sizeof(p));
    if (parse_packet(skb, has_l2, &p) < 0)
        return TC_ACT_OK;
    if (p.key.proto != IPPROTO_TCP ||
        (p.tcp_flags & (TCPF_SYN_ | TCPF_ACK_)) != (TCPF_SYN_ | TCPF_ACK_))
        return TC_ACT_OK;

    /* The reply's reverse is the flow key the SYN was pinned under. */
    struct flow_key rk;
    __builtin_memset(&rk, 0, sizeof(rk));
    __builtin_memcpy(rk.saddr, p.key.daddr, 16);
    __builtin_memcpy(rk.daddr, p.key.saddr, 16);
    rk.sport = p.key.dport;
    rk.dport = p.key.sport;
    rk.proto = p.key.proto;
    rk.family = p.key.family;

    struct flow_val *fv = flows.lookup(&rk);
    if (!fv || !fv->syn_ns)
        return TC_ACT_OK;   /* not ours, or already answered */
    struct path_stats *st = get_path_stats(fv->path_id);
    if (st) {
        st->synacks++;
        if (!(fv->flags & FLOW_SYN_RETRANS)) {
            st->rtt_sum_ns += bpf_ktime_get_ns() - fv->syn_ns;
            st->rtt_count++;
        }
    }
    fv->syn_ns = 0;
    return TC_ACT_OK;
}

int passive_eth(struct __sk_buff *skb)
{
    return passive_skb(skb, 1);
}

int passive_l3(struct __sk_buff *skb)
{
    return passive_skb(skb, 0);
}
