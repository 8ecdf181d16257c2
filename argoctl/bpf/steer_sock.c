/* cgroup connect4/6 and sendmsg4/6: mark locally originated sockets by
 * destination before the kernel looks up the route, so a local proxy's
 * connections follow the same path choice as forwarded traffic.
 *
 * A socket whose mark field was set by someone else (a probe's SO_MARK) is
 * left alone; one we marked ourselves (remembered by socket cookie) may be
 * re-marked, so an unconnected UDP socket follows each datagram's destination. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/in.h>

#include "include/steer.h"

#define SOL_SOCKET_ 1
#define SO_MARK_ 36

static __always_inline int steer_sock(struct bpf_sock_addr *ctx, int family, int is_connect)
{
    struct settings *s = get_settings();
    if (!s)
        return 1;
    __u32 mask = s->fwmark_mask;

    __u32 cur = 0;
    if (bpf_getsockopt(ctx, SOL_SOCKET_, SO_MARK_, &cur, sizeof(cur)))
        return 1;
    __u64 cookie = bpf_get_socket_cookie(ctx);
    if (cur & mask) {
        struct sock_mark *ours = sock_marks.lookup(&cookie);
        if (!ours || ours->mark != (cur & mask))
            return 1;   /* marked by its owner (a probe): keep */
    }

    struct flow_key key;
    __builtin_memset(&key, 0, sizeof(key));
    key.family = family;
    key.proto = ctx->protocol;
    key.dport = (__u16)ctx->user_port;
    if (family == 4) {
        __u32 a = ctx->user_ip4;
        __builtin_memcpy(key.daddr, &a, 4);
    } else {
        __u32 a[4];
        a[0] = ctx->user_ip6[0];
        a[1] = ctx->user_ip6[1];
        a[2] = ctx->user_ip6[2];
        a[3] = ctx->user_ip6[3];
        __builtin_memcpy(key.daddr, a, 16);
    }

    __u32 dest_id = lookup_dest(&key);
    if (!dest_id)
        goto clear;
    struct pathset *ps = pathsets.lookup(&dest_id);
    if (!ps)
        goto clear;
    /* The source port is not bound yet: the cookie stands in for it. */
    int idx = choose_path(ps, flow_hash(&key, (__u32)cookie ^ (__u32)(cookie >> 32)));
    if (idx < 0)
        goto clear;
    const struct path_entry *pe = &ps->paths[idx & (MAX_PATHS - 1)];
    __u32 mark = pe->mark & mask;
    __u32 nm = (cur & ~mask) | mark;
    if (nm != cur && bpf_setsockopt(ctx, SOL_SOCKET_, SO_MARK_, &nm, sizeof(nm)))
        return 1;
    struct sock_mark sm = {.mark = mark, .path_id = pe->path_id, .dest_id = dest_id,
                           .path_idx = idx, .tried = 1 << (idx & (MAX_PATHS - 1))};
    sock_marks.update(&cookie, &sm);

    struct path_stats *st = get_path_stats(pe->path_id);
    if (st) {
        st->sockets++;
        if (is_connect && key.proto == IPPROTO_TCP)
            st->syns++;
    }
    return 1;

clear:
    /* We marked it for an earlier destination that is no longer steered. */
    if (cur & mask) {
        __u32 nm = cur & ~mask;
        bpf_setsockopt(ctx, SOL_SOCKET_, SO_MARK_, &nm, sizeof(nm));
        sock_marks.delete(&cookie);
    }
    return 1;
}

int sock_connect4(struct bpf_sock_addr *ctx) { return steer_sock(ctx, 4, 1); }
int sock_connect6(struct bpf_sock_addr *ctx) { return steer_sock(ctx, 6, 1); }
int sock_sendmsg4(struct bpf_sock_addr *ctx) { return steer_sock(ctx, 4, 0); }
int sock_sendmsg6(struct bpf_sock_addr *ctx) { return steer_sock(ctx, 6, 0); }
