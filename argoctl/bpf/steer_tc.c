/* tc clsact ingress of LAN-facing interfaces: give each forwarded packet the
 * fwmark of the path its flow is on. Always TC_ACT_OK: the mark only selects a
 * routing table; a packet we cannot or should not steer passes unchanged. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "include/parse.h"
#include "include/steer.h"

/* BPF_PROG_TEST_RUN repeats a program on one skb: in the benchmark build the
 * result goes to cb[0], or every repeat after the first would take the
 * "already marked" exit and measure nothing. Same cost: one store. */
#ifdef ARGOCTL_BENCH
#define OUT_MARK cb[0]
#else
#define OUT_MARK mark
#endif

static __always_inline int steer_skb(struct __sk_buff *skb, int has_l2)
{
    struct settings *s = get_settings();
    if (!s)
        return TC_ACT_OK;
    __u32 mask = s->fwmark_mask;
    /* Probes and already-steered packets carry their path's mark. */
    if (skb->mark & mask)
        return TC_ACT_OK;

    struct parsed p;
    __builtin_memset(&p, 0, sizeof(p));
    if (parse_packet(skb, has_l2, &p) < 0)
        return TC_ACT_OK;

    __u32 segs = skb->gso_segs ? skb->gso_segs : 1;
    __u32 mark = steer_flow(&p, skb->len, segs, s);
    if (mark)
        skb->OUT_MARK = (skb->mark & ~mask) | (mark & mask);
    return TC_ACT_OK;
}

/* Ethernet (and VLAN) devices. */
int steer_eth(struct __sk_buff *skb)
{
    return steer_skb(skb, 1);
}

/* Devices without a link-layer header (tunnels, WireGuard). */
int steer_l3(struct __sk_buff *skb)
{
    return steer_skb(skb, 0);
}
