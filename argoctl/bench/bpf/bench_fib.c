/* Benchmark baseline (not attached anywhere): parse the same headers as
 * steer_tc, then ask the kernel's FIB where the packet goes -- the cost of the
 * routing decision the kernel makes anyway. `bench_empty` is the floor. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "../../bpf/include/parse.h"

#define AF_INET_ 2
#define AF_INET6_ 10

int bench_fib(struct __sk_buff *skb)
{
    struct parsed p;
    __builtin_memset(&p, 0, sizeof(p));
    if (parse_packet(skb, 1, &p) < 0)
        return TC_ACT_OK;

    struct bpf_fib_lookup fib;
    __builtin_memset(&fib, 0, sizeof(fib));
    fib.l4_protocol = p.key.proto;
    fib.sport = p.key.sport;
    fib.dport = p.key.dport;
    fib.tot_len = skb->len;
    fib.ifindex = skb->ifindex;
    if (p.key.family == 4) {
        fib.family = AF_INET_;
        __builtin_memcpy(&fib.ipv4_src, p.key.saddr, 4);
        __builtin_memcpy(&fib.ipv4_dst, p.key.daddr, 4);
    } else {
        fib.family = AF_INET6_;
        __builtin_memcpy(fib.ipv6_src, p.key.saddr, 16);
        __builtin_memcpy(fib.ipv6_dst, p.key.daddr, 16);
    }
    int rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
    /* Keep the result observable so the lookup cannot be optimised away. */
    skb->mark = rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH ? fib.ifindex : 0;
    return TC_ACT_OK;
}

int bench_empty(struct __sk_buff *skb)
{
    return TC_ACT_OK;
}
