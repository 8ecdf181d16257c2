/*
 * argoctl._echo: the UDP echo probe's hot path, compiled.
 *
 * One Channel per probe socket (one per path mark and address family), the
 * same job as probe.UdpChannel + ProbeScheduler's send loop, for udp streams:
 * schedule every stream (interval, jitter), build and MAC requests (mac.py's
 * wire format), send them in sendmmsg batches, read replies in recvmmsg
 * batches with the kernel's arrival timestamps, verify and match them, and
 * time out what is not answered. Python keeps the policy: it adds streams,
 * sets their intervals, and consumes results as tuples
 *     (slot, stream_seq, sent_ns, at_ns, code)    code: 0 reply, 1 timeout, 2 send error
 * A stream bound to an argoctl._pathcore.PathState (bind()) feeds it its
 * results directly instead (through _pathcore's capsule), and Python hears of
 * the stream only when a result changed the path's state: code 3. Per-stream
 * counts (received, lost, send errors, RTT sum/min/max) are kept here.
 * Rejected replies are counted with the Python tracker's names and verdicts
 * (malformed, forged, replayed, late, errors, send_errors).
 *
 * Why C: with 1,000 destinations x 4 paths at 1 Hz, the interpreter spent
 * ~45 us of CPU per probe on this path; here it is a few hundred ns plus the
 * kernel's work. Times are CLOCK_MONOTONIC ns (time.monotonic_ns()).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "_pathcore.h"

/* ---- HMAC-SHA256 (RFC 2104) from OpenSSL's libcrypto ----------------------
 * One EVP_MAC_CTX per channel, keyed once; every MAC re-initialises it with the
 * same key (EVP_MAC_init with a NULL key keeps the key: OpenSSL >= 3.0), which
 * costs a context copy, not a key schedule. */

static EVP_MAC *HMAC_ALG;     /* fetched once at import */

typedef struct {
    EVP_MAC_CTX *ctx;
} hmac_key;

static int hmac_init(hmac_key *hk, const uint8_t *key, size_t klen)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    hk->ctx = EVP_MAC_CTX_new(HMAC_ALG);
    if (hk->ctx == NULL || !EVP_MAC_init(hk->ctx, key, klen, params)) {
        EVP_MAC_CTX_free(hk->ctx);
        hk->ctx = NULL;
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL: cannot set up HMAC-SHA256");
        return -1;
    }
    return 0;
}

static void hmac_free(hmac_key *hk)
{
    EVP_MAC_CTX_free(hk->ctx);    /* clears the key schedule it holds */
    hk->ctx = NULL;
}

/* 0 on success. On a failure (out of memory inside OpenSSL) `out` is zeroed:
 * a request then carries a MAC no responder accepts, a reply fails mac_ok. */
static int hmac_sha256(const hmac_key *hk, const uint8_t *msg, size_t len, uint8_t out[32])
{
    size_t n = 0;
    if (EVP_MAC_init(hk->ctx, NULL, 0, NULL) && EVP_MAC_update(hk->ctx, msg, len) &&
        EVP_MAC_final(hk->ctx, out, &n, 32) && n == 32)
        return 0;
    memset(out, 0, 32);
    return -1;
}

/* ---- wire format (mac.py) ------------------------------------------------- */

enum { SIZE = 64, MAC_OFF = 48, MAC_LEN = 16, VERSION = 1, REQUEST = 1, REPLY = 2 };

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static int mac_ok(const hmac_key *hk, const uint8_t *pkt)
{
    uint8_t mac[32], diff = 0;
    if (hmac_sha256(hk, pkt, MAC_OFF, mac) != 0)
        return 0;
    for (int i = 0; i < MAC_LEN; i++)     /* constant time, as hmac.compare_digest */
        diff |= mac[i] ^ pkt[MAC_OFF + i];
    return diff == 0;
}

/* ---- the channel ---------------------------------------------------------- */

enum { R_MALFORMED, R_FORGED, R_REPLAYED, R_LATE, R_ERRORS, R_SEND_ERRORS, R_N };
static const char *REJECT_NAMES[R_N] = {"malformed", "forged", "replayed", "late", "errors",
                                        "send_errors"};
enum { CODE_REPLY = 0, CODE_TIMEOUT = 1, CODE_SEND_ERROR = 2, CODE_CHANGED = 3 };

static const pathcore_api *PATHCORE;   /* imported at the first bind() */
enum { BATCH = 16, READ_BATCH = 64, READ_MAX = 256, DONE_WINDOW = 1 << 16 };
#define SEQ_BITS 48
#define SEQ_MASK ((1ULL << SEQ_BITS) - 1)

/* Channels of one process number their requests in disjoint ranges (as the
 * Python channels share one counter), so a reply captured on one path and
 * replayed at another path's socket is "replayed", never "late". */
static uint64_t channels_made;

typedef struct {
    struct sockaddr_storage addr;
    socklen_t alen;
    int64_t interval;     /* ns, before jitter */
    int64_t limit;        /* probes to send, -1 = no limit */
    uint64_t seq, sent;
    int active;
    uint32_t gen;         /* heap entries of an older generation are dropped (poll) */
    PyObject *sink;       /* a bound _pathcore.PathState, or NULL */
    uint64_t received, lost, errors;
    double rtt_sum, rtt_min, rtt_max;    /* s; min and max valid when received */
} stream_t;

typedef struct {
    int64_t due;
    uint32_t slot, gen;
} heapent_t;

typedef struct {           /* a request in flight, at ring[wire_seq & mask] */
    uint64_t wseq, sseq;
    int64_t sent, deadline;
    uint32_t slot;
    uint8_t nonce[16];
    uint8_t pending;
} outst_t;

typedef struct {
    uint64_t seq;
    uint8_t verdict;       /* R_REPLAYED (answered) or R_LATE (timed out) */
} done_t;

typedef struct {
    PyObject_HEAD
    int fd, family;
    uint32_t key_id;
    hmac_key key;
    int64_t timeout;
    double jitter;
    uint64_t rng[2];
    stream_t *streams;
    Py_ssize_t nstreams, scap;
    heapent_t *heap;
    Py_ssize_t hlen, hcap;
    outst_t *ring;
    uint64_t tag;                 /* this channel's wire seqs are tag << 48 | counter */
    uint64_t rmask, head, next;   /* in flight: counters [head, next) */
    uint64_t inflight;
    done_t *done;
    uint64_t rej[R_N];
    PyObject *results;
} Channel;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t rng_next(Channel *c)   /* xorshift128+: nonces need to be unique, not secret */
{
    uint64_t s1 = c->rng[0], s0 = c->rng[1];
    c->rng[0] = s0;
    s1 ^= s1 << 23;
    c->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return c->rng[1] + s0;
}

static int result(Channel *c, uint32_t slot, uint64_t sseq, int64_t sent, int64_t at, int code)
{
    stream_t *s = &c->streams[slot];
    if (!s->active)
        return 0;                 /* removed: nobody wants it */
    if (code == CODE_REPLY) {     /* (ProbeScheduler.deliver's statistics) */
        double rtt = (double)(at > sent ? at - sent : 0) / 1e9;
        s->rtt_sum += rtt;
        if (!s->received || rtt < s->rtt_min)
            s->rtt_min = rtt;
        if (!s->received || rtt > s->rtt_max)
            s->rtt_max = rtt;
        s->received++;
    } else {
        s->lost++;
        s->errors += code == CODE_SEND_ERROR;
    }
    if (s->sink != NULL) {
        if (PATHCORE->feed(s->sink, sseq, sent, at, code != CODE_REPLY) != 1)
            return 0;             /* fed; nothing for Python (bind() checked the type) */
        code = CODE_CHANGED;
    }
    PyObject *t = Py_BuildValue("(IKLLi)", slot, (unsigned long long)sseq, (long long)sent,
                                (long long)at, code);
    if (t == NULL)
        return -1;
    int rc = PyList_Append(c->results, t);
    Py_DECREF(t);
    return rc;
}

/* min-heap of (due, slot) */
static int heap_push(Channel *c, int64_t due, uint32_t slot)
{
    if (c->hlen == c->hcap) {
        Py_ssize_t n = c->hcap ? 2 * c->hcap : 64;
        heapent_t *h = PyMem_Realloc(c->heap, n * sizeof *h);
        if (h == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        c->heap = h;
        c->hcap = n;
    }
    Py_ssize_t i = c->hlen++;
    while (i > 0) {
        Py_ssize_t p = (i - 1) / 2;
        if (c->heap[p].due <= due)
            break;
        c->heap[i] = c->heap[p];
        i = p;
    }
    c->heap[i].due = due;
    c->heap[i].slot = slot;
    c->heap[i].gen = c->streams[slot].gen;
    return 0;
}

static heapent_t heap_pop(Channel *c)
{
    heapent_t top = c->heap[0], last = c->heap[--c->hlen];
    Py_ssize_t i = 0, n = c->hlen;
    for (;;) {
        Py_ssize_t l = 2 * i + 1, m = l;
        if (l >= n)
            break;
        if (l + 1 < n && c->heap[l + 1].due < c->heap[l].due)
            m = l + 1;
        if (c->heap[m].due >= last.due)
            break;
        c->heap[i] = c->heap[m];
        i = m;
    }
    if (n)
        c->heap[i] = last;
    return top;
}

static int ring_grow(Channel *c)
{
    uint64_t ncap = (c->rmask + 1) * 2;
    outst_t *r = PyMem_Calloc(ncap, sizeof *r);
    if (r == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (uint64_t s = c->head; s < c->next; s++)
        r[s & (ncap - 1)] = c->ring[s & c->rmask];
    PyMem_Free(c->ring);
    c->ring = r;
    c->rmask = ncap - 1;
    return 0;
}

static void finish(Channel *c, uint64_t wseq, int verdict)
{
    done_t *d = &c->done[wseq & (DONE_WINDOW - 1)];
    d->seq = wseq;
    d->verdict = (uint8_t)verdict;
}

static void Channel_dealloc(Channel *c)
{
    for (Py_ssize_t i = 0; i < c->nstreams; i++)
        Py_CLEAR(c->streams[i].sink);
    PyMem_Free(c->streams);
    PyMem_Free(c->heap);
    PyMem_Free(c->ring);
    PyMem_Free(c->done);
    hmac_free(&c->key);
    Py_XDECREF(c->results);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static int Channel_init(Channel *c, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "family", "key", "key_id", "timeout_ns", "jitter", "seed", NULL};
    Py_buffer key;
    unsigned int key_id;
    long long timeout, seed;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiy*ILdL", kwlist, &c->fd, &c->family, &key,
                                     &key_id, &timeout, &c->jitter, &seed))
        return -1;
    if (c->ring != NULL) {     /* __init__ called again: keep the first one */
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_RuntimeError, "Channel is already initialised");
        return -1;
    }
    if (c->family != AF_INET && c->family != AF_INET6) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "family must be AF_INET or AF_INET6");
        return -1;
    }
    /* a jitter near 1 could schedule the next probe at once, and send_due
     * would loop on it until the horizon */
    if (!(c->jitter >= 0.0 && c->jitter <= 0.9)) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "jitter must be within 0..0.9");
        return -1;
    }
    hmac_free(&c->key);        /* an earlier __init__ that failed later on */
    int keyed = hmac_init(&c->key, key.buf, (size_t)key.len);
    PyBuffer_Release(&key);
    if (keyed != 0)
        return -1;
    c->key_id = key_id;
    c->timeout = timeout;
    c->rng[0] = (uint64_t)seed ^ 0x9E3779B97F4A7C15ULL;
    c->rng[1] = ((uint64_t)seed << 1) ^ 0xD1B54A32D192ED03ULL;
    if (c->rng[0] == 0 && c->rng[1] == 0)
        c->rng[1] = 1;
    c->tag = (++channels_made) & 0xFFFF;
    c->rmask = 1023;
    c->head = c->next = 1;
    c->ring = PyMem_Calloc(c->rmask + 1, sizeof *c->ring);
    c->done = PyMem_Calloc(DONE_WINDOW, sizeof *c->done);
    c->results = PyList_New(0);
    if (c->ring == NULL || c->done == NULL || c->results == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int parse_addr(Channel *c, const char *host, int port, stream_t *s)
{
    char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
    if (strlen(host) >= sizeof buf)
        goto bad;
    strcpy(buf, host);
    memset(&s->addr, 0, sizeof s->addr);
    if (c->family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&s->addr;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, buf, &a->sin_addr) != 1)
            goto bad;
        s->alen = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&s->addr;
        char *pct = strchr(buf, '%');
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (pct != NULL) {
            *pct = 0;
            a->sin6_scope_id = if_nametoindex(pct + 1);
            if (a->sin6_scope_id == 0)
                a->sin6_scope_id = (uint32_t)strtoul(pct + 1, NULL, 10);
        }
        if (inet_pton(AF_INET6, buf, &a->sin6_addr) != 1)
            goto bad;
        s->alen = sizeof *a;
    }
    return 0;
bad:
    PyErr_Format(PyExc_ValueError, "not an address of this channel's family: %s", host);
    return -1;
}

static PyObject *Channel_add(Channel *c, PyObject *args)
{
    const char *host;
    int port;
    long long interval, first_due, limit;
    if (!PyArg_ParseTuple(args, "siLLL", &host, &port, &interval, &first_due, &limit))
        return NULL;
    if (interval <= 0) {
        PyErr_SetString(PyExc_ValueError, "interval must be positive");
        return NULL;
    }
    if (c->nstreams == c->scap) {
        Py_ssize_t n = c->scap ? 2 * c->scap : 64;
        stream_t *s = PyMem_Realloc(c->streams, n * sizeof *s);
        if (s == NULL)
            return PyErr_NoMemory();
        c->streams = s;
        c->scap = n;
    }
    stream_t *s = &c->streams[c->nstreams];
    memset(s, 0, sizeof *s);
    if (parse_addr(c, host, port, s) < 0)
        return NULL;
    s->interval = interval;
    s->limit = limit;
    s->active = 1;
    if (limit != 0 && heap_push(c, first_due, (uint32_t)c->nstreams) < 0)
        return NULL;
    return PyLong_FromSsize_t(c->nstreams++);
}

static stream_t *get_stream(Channel *c, Py_ssize_t slot)
{
    if (slot < 0 || slot >= c->nstreams) {
        PyErr_SetString(PyExc_IndexError, "no such stream");
        return NULL;
    }
    return &c->streams[slot];
}

static PyObject *Channel_remove(Channel *c, PyObject *arg)
{
    stream_t *s = get_stream(c, PyLong_AsSsize_t(arg));
    if (s == NULL)
        return NULL;
    s->active = 0;     /* its heap entry is dropped when it comes up */
    Py_CLEAR(s->sink);
    Py_RETURN_NONE;
}

static PyObject *Channel_poll(Channel *c, PyObject *args)
{
    Py_ssize_t slot;
    long long due;
    if (!PyArg_ParseTuple(args, "nL", &slot, &due))
        return NULL;
    stream_t *s = get_stream(c, slot);
    if (s == NULL)
        return NULL;
    if (!s->active || (s->limit >= 0 && (int64_t)s->sent >= s->limit))
        Py_RETURN_NONE;
    s->gen++;            /* the entry already in the heap no longer counts */
    if (heap_push(c, due, (uint32_t)slot) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Channel_set_interval(Channel *c, PyObject *args)
{
    Py_ssize_t slot;
    long long interval;
    if (!PyArg_ParseTuple(args, "nL", &slot, &interval))
        return NULL;
    stream_t *s = get_stream(c, slot);
    if (s == NULL)
        return NULL;
    if (interval <= 0) {
        PyErr_SetString(PyExc_ValueError, "interval must be positive");
        return NULL;
    }
    s->interval = interval;   /* from its next probe on */
    Py_RETURN_NONE;
}

static PyObject *Channel_stream(Channel *c, PyObject *arg)
{
    stream_t *s = get_stream(c, PyLong_AsSsize_t(arg));
    if (s == NULL)
        return NULL;
    PyObject *lo = s->received ? PyFloat_FromDouble(s->rtt_min) : Py_NewRef(Py_None);
    PyObject *hi = s->received ? PyFloat_FromDouble(s->rtt_max) : Py_NewRef(Py_None);
    if (lo == NULL || hi == NULL) {
        Py_XDECREF(lo);
        Py_XDECREF(hi);
        return NULL;
    }
    return Py_BuildValue("(KKKKKdNN)", (unsigned long long)s->seq, (unsigned long long)s->sent,
                         (unsigned long long)s->received, (unsigned long long)s->lost,
                         (unsigned long long)s->errors, s->rtt_sum, lo, hi);
}

/* bind(slot, path_state or None): feed the stream's results to it (see the top). */
static PyObject *Channel_bind(Channel *c, PyObject *args)
{
    Py_ssize_t slot;
    PyObject *core;
    if (!PyArg_ParseTuple(args, "nO", &slot, &core))
        return NULL;
    stream_t *s = get_stream(c, slot);
    if (s == NULL)
        return NULL;
    if (core == Py_None) {
        Py_CLEAR(s->sink);
        Py_RETURN_NONE;
    }
    if (PATHCORE == NULL) {
        const pathcore_api *api = PyCapsule_Import(PATHCORE_CAPSULE, 0);
        if (api == NULL)
            return NULL;
        if (api->version != PATHCORE_API_VERSION) {
            PyErr_Format(PyExc_ImportError, "argoctl._pathcore API %d, _echo needs %d: rebuild both",
                         api->version, PATHCORE_API_VERSION);
            return NULL;
        }
        PATHCORE = api;
    }
    if (!PATHCORE->is_path_state(core)) {
        PyErr_Format(PyExc_TypeError, "bind: a _pathcore.PathState, not %.80s",
                     Py_TYPE(core)->tp_name);
        return NULL;
    }
    if (!s->active) {
        PyErr_SetString(PyExc_ValueError, "bind: the stream was removed");
        return NULL;
    }
    Py_INCREF(core);
    Py_XSETREF(s->sink, core);
    Py_RETURN_NONE;
}

/* Send every probe due by `horizon` (ns); returns the next due time or -1. */
static PyObject *Channel_send_due(Channel *c, PyObject *arg)
{
    long long horizon = PyLong_AsLongLong(arg);
    if (horizon == -1 && PyErr_Occurred())
        return NULL;
    uint8_t pkts[BATCH][SIZE];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    uint64_t wseqs[BATCH];
    for (;;) {
        int n = 0;
        while (n < BATCH && c->hlen && c->heap[0].due <= horizon) {
            heapent_t e = heap_pop(c);
            stream_t *s = &c->streams[e.slot];
            if (!s->active || e.gen != s->gen)
                continue;
            if (c->next - c->head > c->rmask && ring_grow(c) < 0)
                return NULL;
            int64_t now = mono_ns();
            uint64_t w = c->next++;
            outst_t *o = &c->ring[w & c->rmask];
            o->wseq = w;
            o->sseq = ++s->seq;
            o->sent = now;
            o->deadline = now + c->timeout;
            o->slot = e.slot;
            o->pending = 1;
            c->inflight++;
            uint64_t r1 = rng_next(c), r2 = rng_next(c);
            memcpy(o->nonce, &r1, 8);
            memcpy(o->nonce + 8, &r2, 8);
            s->sent++;
            uint8_t *p = pkts[n];
            p[0] = 'A'; p[1] = 'P'; p[2] = VERSION; p[3] = REQUEST;
            p[4] = c->key_id >> 24; p[5] = c->key_id >> 16; p[6] = c->key_id >> 8; p[7] = c->key_id;
            put64(p + 8, c->tag << SEQ_BITS | w);
            put64(p + 16, (uint64_t)now);
            memcpy(p + 24, o->nonce, 16);
            put64(p + 40, 0);
            uint8_t mac[32];
            hmac_sha256(&c->key, p, MAC_OFF, mac);
            memcpy(p + MAC_OFF, mac, MAC_LEN);
            iov[n].iov_base = p;
            iov[n].iov_len = SIZE;
            memset(&msgs[n], 0, sizeof msgs[n]);
            msgs[n].msg_hdr.msg_name = &s->addr;
            msgs[n].msg_hdr.msg_namelen = s->alen;
            msgs[n].msg_hdr.msg_iov = &iov[n];
            msgs[n].msg_hdr.msg_iovlen = 1;
            wseqs[n] = w;
            n++;
            if (s->limit < 0 || (int64_t)s->sent < s->limit) {
                /* next probe: interval +- jitter from when this one was due, or
                 * from now if it went out late (a late loop must not burst); a
                 * probe sent early (within the horizon) keeps the stream's rate */
                double u = (double)(rng_next(c) >> 11) / 9007199254740992.0;
                int64_t base = e.due > now ? e.due : now;
                int64_t next = base + (int64_t)(s->interval * (1.0 + c->jitter * (2.0 * u - 1.0)));
                if (heap_push(c, next, e.slot) < 0)
                    return NULL;
            }
        }
        if (n == 0)
            break;
        int off = 0;
        while (off < n) {
            int k = sendmmsg(c->fd, msgs + off, (unsigned)(n - off), MSG_DONTWAIT);
            if (k > 0) {
                off += k;
                continue;
            }
            if (k < 0 && errno == EINTR)
                continue;
            /* the message at `off` failed (no route, filtered, buffer full):
             * a loss reported at once, as the Python channel does */
            outst_t *o = &c->ring[wseqs[off] & c->rmask];
            o->pending = 0;
            c->inflight--;
            c->rej[R_SEND_ERRORS]++;
            if (result(c, o->slot, o->sseq, o->sent, mono_ns(), CODE_SEND_ERROR) < 0)
                return NULL;
            off++;
        }
        if (n < BATCH)
            break;
    }
    while (c->hlen && (!c->streams[c->heap[0].slot].active ||
                       c->heap[0].gen != c->streams[c->heap[0].slot].gen))
        heap_pop(c);
    return PyLong_FromLongLong(c->hlen ? c->heap[0].due : -1);
}

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, 16);
}

static int handle_reply(Channel *c, const uint8_t *p, size_t len, int trunc,
                        const struct sockaddr_storage *src, int64_t at)
{
    if (len != SIZE || trunc || p[0] != 'A' || p[1] != 'P' || p[2] != VERSION ||
        (p[3] != REQUEST && p[3] != REPLY)) {
        c->rej[R_MALFORMED]++;
        return 0;
    }
    uint32_t kid = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
    if (kid != c->key_id || !mac_ok(&c->key, p) || p[3] != REPLY) {
        c->rej[R_FORGED]++;
        return 0;
    }
    uint64_t wire = get64(p + 8), w = wire & SEQ_MASK;
    if (wire >> SEQ_BITS != c->tag) {   /* never a request of this channel */
        c->rej[R_REPLAYED]++;
        return 0;
    }
    outst_t *o = &c->ring[w & c->rmask];
    if (w < c->head || w >= c->next || o->wseq != w || !o->pending) {
        done_t *d = &c->done[w & (DONE_WINDOW - 1)];   /* verdicts are never 0 */
        c->rej[d->seq == w && d->verdict ? d->verdict : R_REPLAYED]++;
        return 0;
    }
    const stream_t *s = &c->streams[o->slot];
    if ((int64_t)get64(p + 16) != o->sent || memcmp(p + 24, o->nonce, 16) ||
        !same_addr(&s->addr, src)) {
        c->rej[R_REPLAYED]++;
        return 0;
    }
    o->pending = 0;
    c->inflight--;
    if (at > o->deadline) {
        finish(c, w, R_LATE);
        c->rej[R_LATE]++;
        return 0;
    }
    finish(c, w, R_REPLAYED);
    return result(c, o->slot, o->sseq, o->sent, at, CODE_REPLY);
}

/* Read what is queued (up to READ_MAX datagrams); returns how many were read. */
static PyObject *Channel_drain(Channel *c, PyObject *Py_UNUSED(ignored))
{
    uint8_t bufs[READ_BATCH][SIZE + 1];
    union {
        char buf[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } ctl[READ_BATCH];
    struct sockaddr_storage srcs[READ_BATCH];
    struct mmsghdr msgs[READ_BATCH];
    struct iovec iov[READ_BATCH];
    int total = 0;
    while (total < READ_MAX) {
        for (int i = 0; i < READ_BATCH; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = sizeof bufs[i];   /* one spare byte: oversize shows */
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_name = &srcs[i];
            msgs[i].msg_hdr.msg_namelen = sizeof srcs[i];
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = ctl[i].buf;
            msgs[i].msg_hdr.msg_controllen = sizeof ctl[i].buf;
        }
        int k = recvmmsg(c->fd, msgs, READ_BATCH, MSG_DONTWAIT, NULL);
        if (k < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            c->rej[R_ERRORS]++;   /* e.g. ECONNREFUSED from an ICMP error: not a reply */
            total++;
            continue;
        }
        /* The kernel's arrival time, not ours: a loop reading late must not
         * inflate RTTs or turn replies that came in time into losses. */
        int64_t now = mono_ns(), offset = real_ns() - now;
        for (int i = 0; i < k; i++) {
            int64_t at = now;
            struct msghdr *h = &msgs[i].msg_hdr;
            for (struct cmsghdr *cm = CMSG_FIRSTHDR(h); cm; cm = CMSG_NXTHDR(h, cm)) {
                if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS &&
                    cm->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(cm), sizeof ts);
                    int64_t t = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - offset;
                    if (t < at)
                        at = t;
                }
            }
            if (handle_reply(c, bufs[i], msgs[i].msg_len, h->msg_flags & MSG_TRUNC, &srcs[i], at) < 0)
                return NULL;
        }
        total += k;
        if (k < READ_BATCH)
            break;
    }
    return PyLong_FromLong(total);
}

/* Requests whose deadline passed by `now` become timeouts (results, code 1). */
static PyObject *Channel_expire(Channel *c, PyObject *arg)
{
    long long now = PyLong_AsLongLong(arg);
    if (now == -1 && PyErr_Occurred())
        return NULL;
    while (c->head < c->next) {
        outst_t *o = &c->ring[c->head & c->rmask];
        if (o->pending) {
            if (o->deadline > now)
                break;
            o->pending = 0;
            c->inflight--;
            finish(c, c->head, R_LATE);
            if (c->streams[o->slot].active &&
                result(c, o->slot, o->sseq, o->sent, now, CODE_TIMEOUT) < 0)
                return NULL;
        }
        c->head++;
    }
    Py_RETURN_NONE;
}

static PyObject *Channel_next_deadline(Channel *c, PyObject *Py_UNUSED(ignored))
{
    for (uint64_t s = c->head; s < c->next; s++) {
        outst_t *o = &c->ring[s & c->rmask];
        if (o->pending)
            return PyLong_FromLongLong(o->deadline);
        c->head = s + 1;      /* answered: nothing left to expire below it */
    }
    return PyLong_FromLong(-1);
}

static PyObject *Channel_results(Channel *c, PyObject *Py_UNUSED(ignored))
{
    PyObject *fresh = PyList_New(0);
    if (fresh == NULL)
        return NULL;
    PyObject *out = c->results;
    c->results = fresh;
    return out;
}

static PyObject *Channel_rejects(Channel *c, PyObject *Py_UNUSED(ignored))
{
    PyObject *d = PyDict_New();
    for (int i = 0; d && i < R_N; i++) {
        if (!c->rej[i])
            continue;
        PyObject *v = PyLong_FromUnsignedLongLong(c->rej[i]);
        if (v == NULL || PyDict_SetItemString(d, REJECT_NAMES[i], v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

static PyObject *Channel_pending(Channel *c, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(c->inflight);
}

/* Every stream has a limit and has sent it (nothing left to schedule). */
static PyObject *Channel_exhausted(Channel *c, PyObject *Py_UNUSED(ignored))
{
    for (Py_ssize_t i = 0; i < c->nstreams; i++) {
        stream_t *s = &c->streams[i];
        if (s->active && (s->limit < 0 || (int64_t)s->sent < s->limit))
            Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

static PyMethodDef Channel_methods[] = {
    {"add", (PyCFunction)Channel_add, METH_VARARGS,
     "add(host, port, interval_ns, first_due_ns, limit) -> slot (limit -1: none)"},
    {"remove", (PyCFunction)Channel_remove, METH_O, "remove(slot): stop probing it"},
    {"poll", (PyCFunction)Channel_poll, METH_VARARGS,
     "poll(slot, due_ns): its next probe at due_ns instead of when it was due"},
    {"set_interval", (PyCFunction)Channel_set_interval, METH_VARARGS,
     "set_interval(slot, interval_ns): from its next probe on"},
    {"stream", (PyCFunction)Channel_stream, METH_O,
     "stream(slot) -> (last seq, sent, received, lost, send errors, rtt sum s, min s, max s)"},
    {"bind", (PyCFunction)Channel_bind, METH_VARARGS,
     "bind(slot, path_state): feed its results to a _pathcore.PathState (None: unbind)"},
    {"send_due", (PyCFunction)Channel_send_due, METH_O,
     "send_due(horizon_ns) -> next due ns or -1: send every probe due by horizon"},
    {"drain", (PyCFunction)Channel_drain, METH_NOARGS, "drain() -> datagrams read"},
    {"expire", (PyCFunction)Channel_expire, METH_O, "expire(now_ns): time out overdue requests"},
    {"next_deadline", (PyCFunction)Channel_next_deadline, METH_NOARGS,
     "next_deadline() -> ns or -1"},
    {"results", (PyCFunction)Channel_results, METH_NOARGS,
     "results() -> [(slot, seq, sent_ns, at_ns, code)] since the last call\n"
     "(code 0 reply, 1 timeout, 2 send error, 3 a bound stream's state changed)"},
    {"rejects", (PyCFunction)Channel_rejects, METH_NOARGS, "rejects() -> {reason: count}"},
    {"pending", (PyCFunction)Channel_pending, METH_NOARGS, "pending() -> requests in flight"},
    {"exhausted", (PyCFunction)Channel_exhausted, METH_NOARGS,
     "exhausted() -> every stream has sent its limit"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ChannelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "argoctl._echo.Channel",
    .tp_basicsize = sizeof(Channel),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "UDP echo probes on one socket (see the module docstring)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Channel_init,
    .tp_dealloc = (destructor)Channel_dealloc,
    .tp_methods = Channel_methods,
};

/* For the tests: the channel's HMAC path (context reused across messages)
 * against hashlib's. hmac_sha256(key, msgs) -> [32-byte MAC per message]. */
static PyObject *py_hmac_sha256(PyObject *self, PyObject *args)
{
    Py_buffer key;
    PyObject *msgs, *out = NULL;
    hmac_key hk;
    if (!PyArg_ParseTuple(args, "y*O", &key, &msgs))
        return NULL;
    int keyed = hmac_init(&hk, key.buf, (size_t)key.len);
    PyBuffer_Release(&key);
    if (keyed != 0)
        return NULL;
    PyObject *seq = PySequence_Fast(msgs, "msgs must be a sequence of bytes");
    if (seq == NULL)
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    out = PyList_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        Py_buffer msg;
        uint8_t mac[32];
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, i), &msg, PyBUF_SIMPLE) < 0) {
            Py_CLEAR(out);
            break;
        }
        int rc = hmac_sha256(&hk, msg.buf, (size_t)msg.len, mac);
        PyBuffer_Release(&msg);
        PyObject *b = rc == 0 ? PyBytes_FromStringAndSize((const char *)mac, 32) : NULL;
        if (b == NULL) {
            if (rc != 0)
                PyErr_SetString(PyExc_RuntimeError, "OpenSSL: HMAC-SHA256 failed");
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, b);
    }
    Py_DECREF(seq);
done:
    hmac_free(&hk);
    return out;
}

static PyMethodDef module_methods[] = {
    {"hmac_sha256", py_hmac_sha256, METH_VARARGS,
     "hmac_sha256(key, msgs) -> [HMAC-SHA256(key, msg) for msg in msgs], one keyed context"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef echo_module = {
    PyModuleDef_HEAD_INIT, "argoctl._echo",
    "The UDP echo probe's hot path (see argoctl/_echo.c).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__echo(void)
{
    HMAC_ALG = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (HMAC_ALG == NULL) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL: no HMAC implementation available");
        return NULL;
    }
    if (PyType_Ready(&ChannelType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&echo_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ChannelType);
    if (PyModule_AddObject(m, "Channel", (PyObject *)&ChannelType) < 0) {
        Py_DECREF(&ChannelType);
        Py_DECREF(m);
        return NULL;
    }
    /* the constants this file shares with mac.py and probe/, by value, for the tests */
    PyObject *c = Py_BuildValue("{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i}",
                                "SIZE", SIZE, "MAC_OFFSET", MAC_OFF, "MAC_LEN", MAC_LEN,
                                "VERSION", VERSION, "REQUEST", REQUEST, "REPLY", REPLY,
                                "DONE_WINDOW", DONE_WINDOW,
                                "CODE_REPLY", CODE_REPLY, "CODE_TIMEOUT", CODE_TIMEOUT,
                                "CODE_SEND_ERROR", CODE_SEND_ERROR, "CODE_CHANGED", CODE_CHANGED);
    if (c == NULL || PyModule_AddObject(m, "CONSTANTS", c) < 0) {
        Py_XDECREF(c);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
