/* Packet parsing into a flow key. Every check that fails returns -1 and the
 * caller leaves the packet alone (fail-open): non-IP, fragments, truncated or
 * malformed headers, too many IPv6 extension headers. */
#ifndef ARGOCTL_PARSE_H
#define ARGOCTL_PARSE_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/in.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>

#include "consts.h"
#include "structs.h"

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define IP_MF_ 0x2000
#define IP_OFFSET_ 0x1FFF
#define TCPF_SYN_ 0x02
#define TCPF_ACK_ 0x10

struct vlan_hdr_ {
    __be16 tci;
    __be16 proto;
};

struct ipv6_opt_hdr_ {
    __u8 nexthdr;
    __u8 hdrlen;
};

struct ipv6_frag_hdr_ {
    __u8 nexthdr;
    __u8 reserved;
    __be16 frag_off;   /* offset << 3 | M flag */
    __be32 id;
};

struct parsed {
    struct flow_key key;
    __u8 tcp_flags;
};

/* L4: ports (and TCP flags). TCP/UDP headers must be complete; other protocols
 * are steered by addresses alone (ports 0). */
static __always_inline int parse_l4(void *l4, void *end, __u8 proto, struct parsed *p)
{
    p->key.proto = proto;
    if (proto == IPPROTO_TCP) {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > end)
            return -1;
        p->key.sport = th->source;
        p->key.dport = th->dest;
        p->tcp_flags = ((__u8 *)th)[13];
    } else if (proto == IPPROTO_UDP) {
        struct udphdr *uh = l4;
        if ((void *)(uh + 1) > end)
            return -1;
        p->key.sport = uh->source;
        p->key.dport = uh->dest;
    }
    return 0;
}

static __always_inline int parse_ipv4(void *nh, void *end, struct parsed *p)
{
    struct iphdr *iph = nh;
    if ((void *)(iph + 1) > end)
        return -1;
    if (iph->version != 4 || iph->ihl < 5)
        return -1;
    /* Fragments (first or not) stay on the default path: later fragments carry
     * no ports, so steering only the first would split a datagram across paths
     * and break reassembly behind a relay's NAT. */
    if (iph->frag_off & bpf_htons(IP_MF_ | IP_OFFSET_))
        return -1;
    void *l4 = nh + iph->ihl * 4;
    if (l4 > end)
        return -1;
    p->key.family = 4;
    __builtin_memcpy(p->key.saddr, &iph->saddr, 4);
    __builtin_memcpy(p->key.daddr, &iph->daddr, 4);
    return parse_l4(l4, end, iph->protocol, p);
}

static __always_inline int parse_ipv6(void *nh, void *end, struct parsed *p)
{
    struct ipv6hdr *ip6 = nh;
    if ((void *)(ip6 + 1) > end)
        return -1;
    if (ip6->version != 6)
        return -1;
    p->key.family = 6;
    __builtin_memcpy(p->key.saddr, &ip6->saddr, 16);
    __builtin_memcpy(p->key.daddr, &ip6->daddr, 16);

    __u8 next = ip6->nexthdr;
    void *cur = (void *)(ip6 + 1);
#pragma unroll
    for (int i = 0; i < MAX_IPV6_EXT; i++) {
        if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS) {
            struct ipv6_opt_hdr_ *oh = cur;
            if ((void *)(oh + 1) > end)
                return -1;
            next = oh->nexthdr;
            cur += (oh->hdrlen + 1) * 8;
        } else if (next == IPPROTO_AH) {
            struct ipv6_opt_hdr_ *oh = cur;
            if ((void *)(oh + 1) > end)
                return -1;
            next = oh->nexthdr;
            cur += (oh->hdrlen + 2) * 4;
        } else if (next == IPPROTO_FRAGMENT) {
            struct ipv6_frag_hdr_ *fh = cur;
            if ((void *)(fh + 1) > end)
                return -1;
            /* An atomic fragment (offset 0, no M flag) is a whole packet. */
            if (fh->frag_off & bpf_htons(0xFFF9))
                return -1;
            next = fh->nexthdr;
            cur += sizeof(*fh);
        } else {
            return parse_l4(cur, end, next, p);
        }
    }
    /* Still inside the extension header chain: give up. */
    return -1;
}

/* Parse from the link layer (has_l2) or from the network header (tunnel
 * devices without an Ethernet header; the family then comes from skb->protocol). */
static __always_inline int parse_packet(struct __sk_buff *skb, int has_l2, struct parsed *p)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    void *nh = data;
    __be16 proto = skb->protocol;

    if (has_l2) {
        struct ethhdr *eth = data;
        if ((void *)(eth + 1) > end)
            return -1;
        proto = eth->h_proto;
        nh = (void *)(eth + 1);
#pragma unroll
        for (int i = 0; i < 2; i++) {
            if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
                struct vlan_hdr_ *vh = nh;
                if ((void *)(vh + 1) > end)
                    return -1;
                proto = vh->proto;
                nh = (void *)(vh + 1);
            }
        }
    }
    if (proto == bpf_htons(ETH_P_IP))
        return parse_ipv4(nh, end, p);
    if (proto == bpf_htons(ETH_P_IPV6))
        return parse_ipv6(nh, end, p);
    return -1;
}

#endif
