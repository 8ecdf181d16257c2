/*
 * argoctl._pathcore: one path's measurements and score, compiled.
 *
 * PathState is estimator.Estimator and engine._PathState in one object: the
 * same inputs (on_reply, on_timeout, on_passive, tick), the same outputs
 * (snapshot, next_deadline, in_doubt, loss) and the engine's per-decision
 * score(name, now) -> PathScore. The Python classes are the specification:
 * this file follows them statement by statement, in the same order of float
 * operations (built with -ffp-contract=off), and tests/unit/test_pathcore.py
 * replays random traces through both and requires identical decisions, scores
 * and snapshots. The engine uses PathState when this module is built.
 *
 * Why C: at 1,000 destinations x 4 paths probed at 1 Hz the interpreter spent
 * ~2% of a core feeding 4,000 results a second through the estimators and
 * ~2.5% scoring 4,000 paths a round. The compiled UDP channel (_echo.c) also
 * feeds replies and timeouts straight into a bound PathState through the
 * capsule below, so a result costs no Python at all unless it changes the
 * path's state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_pathcore.h"

/* estimator.py's constants */
#define RTT_BETA 0.25
#define JITTER_GAIN (1.0 / 16)
#define PASSIVE_WEIGHT 0.25
#define PASSIVE_MIN_SYNS 2
#define RECENT 16
#define SYN_RTO_S 1.0
#define PASSIVE_FORGET_S 10.0

enum { S_UNKNOWN, S_UP, S_SUSPECT, S_DOWN, S_N };
enum { T_USABLE, T_HELD, T_SUSPECT, T_UNKNOWN, T_DOWN };
static const int STATE_TIER[S_N] = {T_UNKNOWN, T_USABLE, T_SUSPECT, T_DOWN};

/* Estimator.counts, in its key order */
enum { C_REPLIES, C_TIMEOUTS, C_LATE, C_DUPLICATE, C_SYN_SENT, C_SYNACK_RCVD, C_PASSIVE_RTT,
       C_PASSIVE_FAIL, C_SUSPECTS, C_DOWNS, C_RECOVERIES, C_EXCUSED, C_N };
static const char *COUNT_NAMES[C_N] = {"replies", "timeouts", "late", "duplicate", "syn_sent",
                                       "synack_rcvd", "passive_rtt", "passive_fail", "suspects",
                                       "downs", "recoveries", "excused"};

/* Set by use(): estimator.State members (by S_*), estimator.Snapshot, engine.PathScore. */
static PyObject *STATES[S_N], *SNAPSHOT, *PATHSCORE;
static PyObject *COUNT_KEYS[C_N];    /* interned */

/* Snapshot and PathScore are slotted dataclasses, made ~8,000 times a second at
 * 1,000 destinations x 4 paths: rather than run their Python __init__, fill the
 * slots directly (offsets from the classes' member descriptors, looked up by
 * field name in use(); when they are not plain object slots, call the class). */
#define SNAP_FIELDS 12
#define SCORE_FIELDS 9
static const char *SNAP_NAMES[SNAP_FIELDS] = {
    "state", "since", "srtt_ms", "rttvar_ms", "jitter_ms", "last_rtt_ms", "loss", "last_reply",
    "recovered_at", "consecutive_ok", "consecutive_miss", "counts"};
static const char *SCORE_NAMES[SCORE_FIELDS] = {
    "path", "state", "tier", "raw_ms", "smoothed_ms", "penalty", "suppressed", "held_until",
    "snapshot"};
static Py_ssize_t SNAP_OFF[SNAP_FIELDS], SCORE_OFF[SCORE_FIELDS];
static int SNAP_DIRECT, SCORE_DIRECT;

/* Slot offsets of `names` in `cls` (1), or 0 when any is not a plain object slot. */
static int slot_offsets(PyObject *cls, const char **names, int n, Py_ssize_t *off)
{
    if (!PyType_Check(cls) || ((PyTypeObject *)cls)->tp_init == NULL)
        return 0;
    for (int i = 0; i < n; i++) {
        PyObject *d = PyObject_GetAttrString(cls, names[i]);
        if (d == NULL) {
            PyErr_Clear();
            return 0;
        }
        int ok = Py_IS_TYPE(d, &PyMemberDescr_Type) &&
                 ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
        if (ok)
            off[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_DECREF(d);
        if (!ok)
            return 0;
    }
    return 1;
}

/* cls(*a) (steals the references in a[], which may hold NULL after a failure). */
static PyObject *make(PyObject *cls, int direct, const Py_ssize_t *off, PyObject **a, int n)
{
    PyObject *out = NULL;
    int ok = 1;
    for (int i = 0; i < n; i++)
        ok &= a[i] != NULL;
    if (ok && direct) {
        out = ((PyTypeObject *)cls)->tp_alloc((PyTypeObject *)cls, 0);
        if (out != NULL) {
            for (int i = 0; i < n; i++) {
                *(PyObject **)((char *)out + off[i]) = a[i];   /* the reference moves in */
                a[i] = NULL;
            }
        }
    } else if (ok) {
        out = PyObject_Vectorcall(cls, a, n, NULL);
    }
    for (int i = 0; i < n; i++)
        Py_XDECREF(a[i]);
    return out;
}

/* An optional float (Python's None or a float). */
typedef struct {
    double v;
    int ok;
} opt_t;

static const opt_t NONE = {0.0, 0};

static opt_t some(double v)
{
    opt_t o = {v, 1};
    return o;
}

static PyObject *opt_py(opt_t o)
{
    if (!o.ok)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(o.v);
}

/* A deque(maxlen=cap) of doubles (bools in the loss window). */
typedef struct {
    double *v;
    int cap, len, head;     /* head: index of the oldest */
} ring_t;

static int ring_init(ring_t *r, int cap)
{
    r->v = PyMem_Calloc(cap > 0 ? cap : 1, sizeof(double));
    r->cap = cap;
    r->len = r->head = 0;
    return r->v ? 0 : -1;
}

static void ring_append(ring_t *r, double x)
{
    if (r->cap <= 0)
        return;
    if (r->len == r->cap) {
        r->v[r->head] = x;
        r->head = (r->head + 1) % r->cap;
    } else {
        r->v[(r->head + r->len) % r->cap] = x;
        r->len++;
    }
}

static double ring_get(const ring_t *r, int i)   /* i >= 0 from the oldest, < 0 from the newest */
{
    if (i < 0)
        i += r->len;
    return r->v[(r->head + i) % r->cap];
}

/* Resolved probe seqs -> answered?, forgetting the oldest beyond `max`
 * (Estimator._resolved: an insertion-ordered dict only ever given new keys):
 * open addressing with backward-shift deletion, and a FIFO of the keys. */
typedef struct {
    int64_t *keys;
    uint8_t *vals, *used;
    size_t mask;
    int64_t *fifo;
    int max, len, head;     /* fifo holds max + 1 */
} seqset_t;

static int seqset_init(seqset_t *s, int max)
{
    size_t n = 8;
    while (n < (size_t)(max + 1) * 2)
        n <<= 1;
    s->keys = PyMem_Calloc(n, sizeof(int64_t));
    s->vals = PyMem_Calloc(n, 1);
    s->used = PyMem_Calloc(n, 1);
    s->fifo = PyMem_Calloc(max + 1, sizeof(int64_t));
    s->mask = n - 1;
    s->max = max;
    s->len = s->head = 0;
    return s->keys && s->vals && s->used && s->fifo ? 0 : -1;
}

static void seqset_free(seqset_t *s)
{
    PyMem_Free(s->keys);
    PyMem_Free(s->vals);
    PyMem_Free(s->used);
    PyMem_Free(s->fifo);
}

static size_t seq_hash(const seqset_t *s, int64_t k)
{
    return (size_t)(((uint64_t)k * 0x9E3779B97F4A7C15ull) >> 17) & s->mask;
}

static int seqset_find(const seqset_t *s, int64_t k)   /* -1 absent, else the value */
{
    for (size_t i = seq_hash(s, k); s->used[i]; i = (i + 1) & s->mask)
        if (s->keys[i] == k)
            return s->vals[i];
    return -1;
}

static void seqset_del(seqset_t *s, int64_t k)
{
    size_t i = seq_hash(s, k);
    while (s->used[i] && s->keys[i] != k)
        i = (i + 1) & s->mask;
    if (!s->used[i])
        return;
    s->used[i] = 0;
    /* backward shift: move later entries of the cluster into the hole */
    for (size_t j = (i + 1) & s->mask; s->used[j]; j = (j + 1) & s->mask) {
        size_t h = seq_hash(s, s->keys[j]);
        if (((j - h) & s->mask) >= ((j - i) & s->mask)) {
            s->keys[i] = s->keys[j];
            s->vals[i] = s->vals[j];
            s->used[i] = 1;
            s->used[j] = 0;
            i = j;
        }
    }
}

static void seqset_add(seqset_t *s, int64_t k, int v)   /* k must be absent */
{
    size_t i = seq_hash(s, k);
    while (s->used[i])
        i = (i + 1) & s->mask;
    s->keys[i] = k;
    s->vals[i] = (uint8_t)v;
    s->used[i] = 1;
    s->fifo[(s->head + s->len) % (s->max + 1)] = k;
    s->len++;
    if (s->len > s->max) {
        seqset_del(s, s->fifo[s->head]);
        s->head = (s->head + 1) % (s->max + 1);
        s->len--;
    }
}

typedef struct {
    PyObject_HEAD
    /* policy */
    double interval, detect, suspect_after, rtt_alpha;
    long detect_multiplier, recover_probes;
    /* fleet mode's per-stream pace (Estimator.pace): silence counts from
       quiet_from when later than the last reply; unanswered SYNs are judged at
       the base detection time */
    long pace_n;
    double quiet_from, passive_detect;
    /* Estimator */
    int state;
    double since;
    opt_t srtt, rttvar;
    double jitter;
    opt_t last_rtt, last_reply, recovered_at;
    opt_t gap_from, gap_to;   /* Estimator.gap_from / gap_to */
    ring_t recent;            /* latest active RTTs (s) */
    int failed;
    int excused;              /* ... but the engine excused it (Estimator.judge) */
    int fresh_down;           /* a failure the engine has not judged yet */
    long long consecutive_ok, consecutive_miss;
    ring_t window;            /* 1.0 answered, 0.0 lost */
    long long lost_in_window;
    seqset_t resolved;
    long long syn_unanswered;
    opt_t syn_pending_since, last_syn;
    int passive_failing;
    unsigned long long version;
    PyObject *snap;
    unsigned long long snap_version;
    int snap_valid;
    unsigned long long counts[C_N];
    /* Tuning and the engine's per-path constants */
    double jitter_weight, loss_cost_ms, half_life_s, flap_penalty, flap_suppress, flap_reuse,
        flap_half_life_s, flap_max_suppress_s, shift_margins, rel, abs_ms, hold_down_s;
    int shift_samples;
    /* engine._PathState */
    opt_t smoothed;
    double smoothed_at, penalty, penalty_at;
    int suppressed;
    unsigned long long downs_seen, replies_seen;
    opt_t recovered_seen;
    ring_t recent_raw;        /* raw scores of the latest replies (the level-shift test) */
    PyObject *scored;
    opt_t scored_now;
    unsigned long long scored_version;
    double decay_dt, decay;
    PyObject *dests;          /* destinations reading this path state */
} PathState;

static PyTypeObject PathStateType;

/* ---- the estimator ------------------------------------------------------ */

static void enter(PathState *p, int state, double now)
{
    if (state == p->state)
        return;
    p->version++;
    if (state == S_DOWN && p->state != S_UNKNOWN) {
        p->counts[C_DOWNS]++;
        p->failed = 1;
        p->fresh_down = 1;
    }
    if (state == S_SUSPECT)
        p->counts[C_SUSPECTS]++;
    p->state = state;
    p->since = now;
}

static void maybe_recover(PathState *p, double now)
{
    if (p->consecutive_ok >= p->recover_probes && !p->passive_failing) {
        int failed = p->failed, excused = p->excused;
        p->failed = 0;
        p->excused = 0;
        p->fresh_down = 0;
        enter(p, S_UP, now);
        if (failed) {
            if (!excused) {
                p->recovered_at = some(now);
                p->counts[C_RECOVERIES]++;
            }
            p->window.len = p->window.head = 0;
            p->lost_in_window = 0;
        }
    }
}

static void resolve(PathState *p, int64_t seq, int ok)
{
    if (p->window.len == p->window.cap && ring_get(&p->window, 0) == 0.0)
        p->lost_in_window--;
    ring_append(&p->window, ok ? 1.0 : 0.0);
    if (!ok)
        p->lost_in_window++;
    seqset_add(&p->resolved, seq, ok);
}

static void on_reply(PathState *p, int64_t seq, double sent_at, opt_t rtt_in, double now)
{
    p->version++;
    double rtt = rtt_in.ok ? rtt_in.v : now - sent_at;
    int seen = seqset_find(&p->resolved, seq);
    if (seen >= 0) {
        p->counts[seen ? C_DUPLICATE : C_LATE]++;
        return;
    }
    resolve(p, seq, 1);
    p->counts[C_REPLIES]++;
    if (rtt < 0)
        rtt = 0.0;
    if (p->last_rtt.ok)
        p->jitter += (fabs(rtt - p->last_rtt.v) - p->jitter) * JITTER_GAIN;
    p->last_rtt = some(rtt);
    ring_append(&p->recent, rtt);
    if (!p->srtt.ok) {
        p->srtt = some(rtt);
        p->rttvar = some(rtt / 2);
    } else {
        p->rttvar.v += (fabs(p->srtt.v - rtt) - p->rttvar.v) * RTT_BETA;
        p->srtt.v = p->srtt.v + (rtt - p->srtt.v) * p->rtt_alpha;
    }
    if (p->last_reply.ok) {
        double last = fmax(p->last_reply.v, p->quiet_from);
        if (now - last >= p->detect * 0.5) {
            p->gap_from = some(last);
            p->gap_to = some(now);
        }
    }
    p->last_reply = some(now);
    p->consecutive_ok++;
    p->consecutive_miss = 0;
    if (p->state == S_UNKNOWN)
        enter(p, S_UP, now);
    else if (p->state == S_SUSPECT || p->state == S_DOWN)
        maybe_recover(p, now);
}

static void on_timeout(PathState *p, int64_t seq, double now)
{
    p->version++;
    if (seqset_find(&p->resolved, seq) >= 0)
        return;
    resolve(p, seq, 0);
    p->counts[C_TIMEOUTS]++;
    p->consecutive_ok = 0;
    p->consecutive_miss++;
    if (p->consecutive_miss >= p->detect_multiplier) {
        if (p->state != S_DOWN)
            enter(p, S_DOWN, now);
    } else if (p->state == S_UP) {
        enter(p, S_SUSPECT, now);
    }
}

static void check_passive(PathState *p, double now)
{
    if (p->passive_failing) {
        if (now >= p->last_syn.v + PASSIVE_FORGET_S) {
            p->passive_failing = 0;
            p->version++;
            p->syn_unanswered = 0;
            p->syn_pending_since = NONE;
            if (p->state == S_SUSPECT || p->state == S_DOWN)
                maybe_recover(p, now);
        }
        return;
    }
    if (!p->syn_pending_since.ok || p->syn_unanswered < PASSIVE_MIN_SYNS ||
        now < p->syn_pending_since.v + fmax(p->passive_detect, SYN_RTO_S))
        return;
    p->passive_failing = 1;
    p->version++;
    p->counts[C_PASSIVE_FAIL]++;
    if (p->state == S_UP) {
        p->consecutive_ok = 0;
        enter(p, S_SUSPECT, now);
    }
}

static void tick(PathState *p, double now)
{
    int state = p->state;
    if ((state == S_UP || state == S_SUSPECT) && p->last_reply.ok) {
        double last = p->last_reply.v;
        if (last < p->quiet_from)
            last = p->quiet_from;
        if (now >= last + p->detect) {
            p->consecutive_ok = 0;
            enter(p, S_DOWN, now);
        } else if (now >= last + p->suspect_after && state == S_UP) {
            p->consecutive_ok = 0;
            enter(p, S_SUSPECT, now);
        }
    }
    if (p->passive_failing || p->syn_pending_since.ok)
        check_passive(p, now);
}

static void rtt_sample(PathState *p, double r, double weight)
{
    if (!p->srtt.ok) {
        p->srtt = some(r);
        p->rttvar = some(r / 2);
        return;
    }
    p->rttvar.v += (fabs(p->srtt.v - r) - p->rttvar.v) * RTT_BETA * weight;
    p->srtt.v += (r - p->srtt.v) * p->rtt_alpha * weight;
}

static double loss_of(const PathState *p)
{
    return p->window.len ? (double)p->lost_in_window / p->window.len : 0.0;
}

static PyObject *counts_dict(const PathState *p)
{
    PyObject *d = _PyDict_NewPresized(C_N);
    for (int i = 0; d && i < C_N; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(p->counts[i]);
        if (v == NULL || PyDict_SetItem(d, COUNT_KEYS[i], v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(d);
            break;
        }
        Py_DECREF(v);
    }
    return d;
}

static PyObject *opt_ms(opt_t o)
{
    return o.ok ? PyFloat_FromDouble(o.v * 1000.0) : (Py_INCREF(Py_None), Py_None);
}

/* Estimator.snapshot(): the same object until the version changes (new ref). */
static PyObject *snapshot(PathState *p)
{
    if (p->snap_valid && p->snap_version == p->version) {
        Py_INCREF(p->snap);
        return p->snap;
    }
    if (SNAPSHOT == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "argoctl._pathcore.use() was not called");
        return NULL;
    }
    PyObject *a[SNAP_FIELDS] = {
        STATES[p->state], PyFloat_FromDouble(p->since), opt_ms(p->srtt), opt_ms(p->rttvar),
        PyFloat_FromDouble(p->jitter * 1000.0), opt_ms(p->last_rtt),
        PyFloat_FromDouble(loss_of(p)), opt_py(p->last_reply), opt_py(p->recovered_at),
        PyLong_FromLongLong(p->consecutive_ok), PyLong_FromLongLong(p->consecutive_miss),
        counts_dict(p)};
    Py_INCREF(a[0]);
    PyObject *snap = make(SNAPSHOT, SNAP_DIRECT, SNAP_OFF, a, SNAP_FIELDS);
    if (snap == NULL)
        return NULL;
    Py_XSETREF(p->snap, snap);
    p->snap_version = p->version;
    p->snap_valid = 1;
    Py_INCREF(snap);
    return snap;
}

/* ---- the engine's score (engine._PathState.score) ----------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const ring_t *r)    /* statistics.median */
{
    double v[r->len > 0 ? r->len : 1];
    for (int i = 0; i < r->len; i++)
        v[i] = ring_get(r, i);
    qsort(v, r->len, sizeof(double), cmp_double);
    int n = r->len;
    if (n % 2 == 1)
        return v[n / 2];
    return (v[n / 2 - 1] + v[n / 2]) / 2;
}

static PyObject *score(PathState *p, PyObject *name, double now)
{
    if (p->scored != NULL && p->scored_now.ok && p->scored_now.v == now &&
        p->scored_version == p->version) {
        Py_INCREF(p->scored);
        return p->scored;
    }
    tick(p, now);
    PyObject *snap = snapshot(p);
    if (snap == NULL)
        return NULL;
    /* Flap damping: decay, then charge new failures. */
    double penalty = p->penalty;
    if (penalty != 0.0)
        penalty *= pow(0.5, (now - p->penalty_at) / p->flap_half_life_s);
    p->penalty_at = now;
    unsigned long long downs = p->counts[C_DOWNS] + p->counts[C_PASSIVE_FAIL] -
                               p->counts[C_EXCUSED];
    if (downs > p->downs_seen) {
        double cap = p->flap_reuse * pow(2.0, p->flap_max_suppress_s / p->flap_half_life_s);
        double v = penalty + p->flap_penalty * (double)(downs - p->downs_seen);
        penalty = v < cap ? v : cap;
        p->downs_seen = downs;
    }
    p->penalty = penalty;
    if (penalty > p->flap_suppress)
        p->suppressed = 1;
    else if (penalty < p->flap_reuse)
        p->suppressed = 0;
    double loss = loss_of(p);
    if (loss >= 0.99)
        loss = 0.99;
    double inv = 1.0 / (1.0 - loss);
    double add = p->jitter_weight * (p->jitter * 1000.0) + p->loss_cost_ms * loss;
    opt_t recovered = p->recovered_at;
    opt_t raw = p->last_rtt.ok ? some((p->last_rtt.v * 1000.0 + add) * inv) : NONE;
    opt_t smoothed = p->smoothed;
    if (!p->srtt.ok) {
        smoothed = NONE;
    } else {
        double base = (p->srtt.v * 1000.0 + add) * inv;
        int same = recovered.ok == p->recovered_seen.ok &&
                   (!recovered.ok || recovered.v == p->recovered_seen.v);
        if (!smoothed.ok || !same) {
            smoothed = some(base);
            p->recovered_seen = recovered;
        } else {
            double dt = now - p->smoothed_at;
            if (dt > 0) {
                if (dt != p->decay_dt) {
                    p->decay_dt = dt;
                    p->decay = 1 - pow(0.5, dt / p->half_life_s);
                }
                smoothed.v += (base - smoothed.v) * p->decay;
            }
        }
    }
    p->smoothed_at = now;
    unsigned long long replies = p->counts[C_REPLIES];
    if (raw.ok && replies > p->replies_seen) {
        unsigned long long fresh = replies - p->replies_seen;
        int n = p->shift_samples;
        p->replies_seen = replies;
        if (fresh == 1) {
            ring_append(&p->recent_raw, raw.v);
        } else {
            long long k = (long long)fresh;
            if (k > n)
                k = n;
            if (k > p->recent.len)
                k = p->recent.len;
            for (long long i = k; i > 0; i--)
                ring_append(&p->recent_raw, (ring_get(&p->recent, (int)-i) * 1000.0 + add) * inv);
        }
        if (smoothed.ok && p->recent_raw.len == n) {
            double m = smoothed.v * p->rel;
            if (m < p->abs_ms)
                m = p->abs_ms;
            m *= p->shift_margins;
            double lo = ring_get(&p->recent_raw, 0), hi = lo;
            for (int i = 1; i < n; i++) {
                double x = ring_get(&p->recent_raw, i);
                lo = x < lo ? x : lo;
                hi = x > hi ? x : hi;
            }
            if (lo > smoothed.v + m || hi < smoothed.v - m) {
                smoothed.v = median(&p->recent_raw);
                p->recent_raw.len = p->recent_raw.head = 0;
            }
        }
    }
    p->smoothed = smoothed;
    opt_t held = NONE;
    if (recovered.ok && now < recovered.v + p->hold_down_s)
        held = some(recovered.v + p->hold_down_s);
    int tier;
    if (p->state == S_UP)
        tier = (held.ok || p->suppressed) ? T_HELD : T_USABLE;
    else
        tier = STATE_TIER[p->state];
    PyObject *a[SCORE_FIELDS] = {name, STATES[p->state], PyLong_FromLong(tier), opt_py(raw),
                      opt_py(smoothed), PyFloat_FromDouble(penalty),
                      PyBool_FromLong(p->suppressed), opt_py(held), snap};
    Py_INCREF(name);
    Py_INCREF(a[1]);
    PyObject *out = make(PATHSCORE, SCORE_DIRECT, SCORE_OFF, a, SCORE_FIELDS);
    if (out == NULL)
        return NULL;
    Py_XSETREF(p->scored, out);
    p->scored_now = some(now);
    p->scored_version = p->version;
    Py_INCREF(out);
    return out;
}

/* ---- Python interface ----------------------------------------------------- */

static int get_double(PyObject *o, const char *name, double *out)
{
    PyObject *v = PyObject_GetAttrString(o, name);
    if (v == NULL)
        return -1;
    *out = PyFloat_AsDouble(v);
    Py_DECREF(v);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int get_long(PyObject *o, const char *name, long *out)
{
    PyObject *v = PyObject_GetAttrString(o, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int PathState_init(PathState *p, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"policy", "tuning", "now", NULL};
    PyObject *policy, *tuning;
    double now = 0.0;
    if (p->dests != NULL || p->recent.v != NULL) {   /* (even after a failed __init__) */
        PyErr_SetString(PyExc_RuntimeError, "PathState is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|d", kwlist, &policy, &tuning, &now))
        return -1;
    double smooth_half_life;
    long loss_window, shift_samples;
    /* Times come derived, as values, from the policy's one place (Policy.timing). */
    PyObject *timing = PyObject_GetAttrString(policy, "timing");
    if (timing == NULL)
        return -1;
    int bad = get_double(timing, "interval_s", &p->interval) < 0 ||
              get_double(timing, "detect_s", &p->detect) < 0 ||
              get_double(timing, "suspect_after_s", &p->suspect_after) < 0 ||
              get_double(timing, "hold_down_s", &p->hold_down_s) < 0;
    Py_DECREF(timing);
    if (bad)
        return -1;
    p->pace_n = 1;
    p->quiet_from = -INFINITY;
    p->passive_detect = p->detect;
    if (get_double(policy, "rtt_alpha", &p->rtt_alpha) < 0 ||
        get_long(policy, "detect_multiplier", &p->detect_multiplier) < 0 ||
        get_long(policy, "recover_probes", &p->recover_probes) < 0 ||
        get_long(policy, "loss_window", &loss_window) < 0 ||
        get_double(policy, "switch_relative", &p->rel) < 0 ||
        get_double(policy, "switch_absolute_ms", &p->abs_ms) < 0 ||
        get_double(tuning, "jitter_weight", &p->jitter_weight) < 0 ||
        get_double(tuning, "loss_cost_ms", &p->loss_cost_ms) < 0 ||
        get_double(tuning, "smooth_half_life", &smooth_half_life) < 0 ||
        get_long(tuning, "shift_samples", &shift_samples) < 0 ||
        get_double(tuning, "shift_margins", &p->shift_margins) < 0 ||
        get_double(tuning, "flap_penalty", &p->flap_penalty) < 0 ||
        get_double(tuning, "flap_suppress", &p->flap_suppress) < 0 ||
        get_double(tuning, "flap_reuse", &p->flap_reuse) < 0 ||
        get_double(tuning, "flap_half_life_s", &p->flap_half_life_s) < 0 ||
        get_double(tuning, "flap_max_suppress_s", &p->flap_max_suppress_s) < 0)
        return -1;
    if (loss_window < 1 || loss_window > 1000000 || shift_samples < 1 || shift_samples > 1000) {
        PyErr_Format(PyExc_ValueError, "loss_window %ld or shift_samples %ld out of range",
                     loss_window, shift_samples);
        return -1;
    }
    p->half_life_s = smooth_half_life * p->interval;
    p->shift_samples = (int)shift_samples;
    p->state = S_UNKNOWN;
    p->since = now;
    int rmax = 4 * (int)loss_window > 64 ? 4 * (int)loss_window : 64;
    if (ring_init(&p->recent, RECENT) < 0 || ring_init(&p->window, (int)loss_window) < 0 ||
        ring_init(&p->recent_raw, (int)shift_samples) < 0 ||
        seqset_init(&p->resolved, rmax) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    p->dests = PyList_New(0);
    return p->dests ? 0 : -1;
}

static void PathState_dealloc(PathState *p)
{
    PyObject_GC_UnTrack(p);
    Py_CLEAR(p->snap);
    Py_CLEAR(p->scored);
    Py_CLEAR(p->dests);
    PyMem_Free(p->recent.v);
    PyMem_Free(p->window.v);
    PyMem_Free(p->recent_raw.v);
    seqset_free(&p->resolved);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static int PathState_traverse(PathState *p, visitproc visit, void *arg)
{
    Py_VISIT(p->snap);
    Py_VISIT(p->scored);
    Py_VISIT(p->dests);
    return 0;
}

static int PathState_clear(PathState *p)
{
    Py_CLEAR(p->snap);
    Py_CLEAR(p->scored);
    Py_CLEAR(p->dests);
    return 0;
}

static int ready(PathState *p)
{
    if (p->dests == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "PathState is not initialised");
        return 0;
    }
    return 1;
}

static int parse_seq(PyObject *o, int64_t *seq)
{
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *seq = v;
    return 0;
}

static int parse_opt(PyObject *o, opt_t *out)
{
    if (o == Py_None) {
        *out = NONE;
        return 0;
    }
    double v = PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred())
        return -1;
    *out = some(v);
    return 0;
}

/* The Estimator methods take keywords as the Python ones do. */
static int parse_result(PathState *p, PyObject *args, PyObject *kw, int64_t *seq, double *sent_at,
                        opt_t *rtt, double *now)
{
    static char *kwlist[] = {"seq", "sent_at", "rtt", "now", NULL};
    PyObject *seq_o, *rtt_o;
    if (!ready(p) ||
        !PyArg_ParseTupleAndKeywords(args, kw, "OdOd", kwlist, &seq_o, sent_at, &rtt_o, now) ||
        parse_seq(seq_o, seq) < 0 || parse_opt(rtt_o, rtt) < 0)
        return -1;
    return 0;
}

static PyObject *PathState_on_reply(PathState *p, PyObject *args, PyObject *kw)
{
    int64_t seq;
    double sent_at, now;
    opt_t rtt;
    if (parse_result(p, args, kw, &seq, &sent_at, &rtt, &now) < 0)
        return NULL;
    on_reply(p, seq, sent_at, rtt, now);
    Py_RETURN_NONE;
}

static PyObject *PathState_on_timeout(PathState *p, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"seq", "now", NULL};
    PyObject *seq_o;
    double now;
    int64_t seq;
    if (!ready(p) || !PyArg_ParseTupleAndKeywords(args, kw, "Od", kwlist, &seq_o, &now) ||
        parse_seq(seq_o, &seq) < 0)
        return NULL;
    on_timeout(p, seq, now);
    Py_RETURN_NONE;
}

/* Estimator.on_lost: what the path rides on is gone (the daemon saw it go). */
static PyObject *PathState_on_lost(PathState *p, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"now", NULL};
    double now;
    if (!ready(p) || !PyArg_ParseTupleAndKeywords(args, kw, "d", kwlist, &now))
        return NULL;
    p->version++;
    p->consecutive_ok = 0;
    if (p->consecutive_miss < p->detect_multiplier)
        p->consecutive_miss = p->detect_multiplier;
    enter(p, S_DOWN, now);
    p->fresh_down = 0;        /* its own failure, never a stall: charged, not judged */
    Py_RETURN_NONE;
}

static PyObject *PathState_on_result(PathState *p, PyObject *args, PyObject *kw)
{
    int64_t seq;
    double sent_at, now;
    opt_t rtt;
    if (parse_result(p, args, kw, &seq, &sent_at, &rtt, &now) < 0)
        return NULL;
    if (rtt.ok)
        on_reply(p, seq, sent_at, rtt, now);
    else
        on_timeout(p, seq, now);
    Py_RETURN_NONE;
}

static PyObject *PathState_tick(PathState *p, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"now", NULL};
    double now;
    if (!ready(p) || !PyArg_ParseTupleAndKeywords(args, kw, "d", kwlist, &now))
        return NULL;
    tick(p, now);
    Py_RETURN_NONE;
}

/* Estimator.judge */
static PyObject *PathState_judge(PathState *p, PyObject *arg)
{
    if (!ready(p))
        return NULL;
    int common = PyObject_IsTrue(arg);
    if (common < 0)
        return NULL;
    p->fresh_down = 0;
    if (common && p->state == S_DOWN && p->failed && !p->excused) {
        p->excused = 1;
        p->counts[C_EXCUSED]++;
        p->version++;
    }
    Py_RETURN_NONE;
}

static PyObject *PathState_pace(PathState *p, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"n", "timing", "now", NULL};
    long n;
    PyObject *timing;
    double now, interval, detect, suspect_after;
    if (!ready(p) || !PyArg_ParseTupleAndKeywords(args, kw, "lOd", kwlist, &n, &timing, &now))
        return NULL;
    if (n == p->pace_n)
        Py_RETURN_NONE;
    if (get_double(timing, "interval_s", &interval) < 0 ||
        get_double(timing, "detect_s", &detect) < 0 ||
        get_double(timing, "suspect_after_s", &suspect_after) < 0)
        return NULL;
    p->interval = interval;
    p->detect = detect;
    p->suspect_after = suspect_after;
    p->pace_n = n;
    p->quiet_from = now;
    p->version++;
    Py_RETURN_NONE;
}

static PyObject *PathState_on_passive(PathState *p, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"syn_sent", "synack_rcvd", "rtt_samples", "now", NULL};
    long long syn_sent, synack_rcvd;
    PyObject *samples;
    double now;
    if (!ready(p) || !PyArg_ParseTupleAndKeywords(args, kw, "LLOd", kwlist, &syn_sent,
                                                  &synack_rcvd, &samples, &now))
        return NULL;
    PyObject *it = PyObject_GetIter(samples);
    if (it == NULL)
        return NULL;
    /* read the samples first: a bad one changes nothing */
    double buf[64];
    double *rs = buf;
    Py_ssize_t nr = 0, cap = 64;
    PyObject *x;
    while ((x = PyIter_Next(it)) != NULL) {
        double r = PyFloat_AsDouble(x);
        Py_DECREF(x);
        if (r == -1.0 && PyErr_Occurred())
            break;
        if (nr == cap) {
            double *bigger = PyMem_Malloc(2 * cap * sizeof(double));
            if (bigger == NULL) {
                PyErr_NoMemory();
                break;
            }
            memcpy(bigger, rs, nr * sizeof(double));
            if (rs != buf)
                PyMem_Free(rs);
            rs = bigger;
            cap *= 2;
        }
        rs[nr++] = r;
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        if (rs != buf)
            PyMem_Free(rs);
        return NULL;
    }
    p->version++;
    p->counts[C_SYN_SENT] += syn_sent;
    if (syn_sent)
        p->last_syn = some(now);
    p->counts[C_SYNACK_RCVD] += synack_rcvd;
    for (Py_ssize_t i = 0; i < nr; i++) {
        p->counts[C_PASSIVE_RTT]++;
        rtt_sample(p, rs[i] > 0.0 ? rs[i] : 0.0, PASSIVE_WEIGHT);
    }
    if (rs != buf)
        PyMem_Free(rs);
    if (synack_rcvd > 0) {
        long long u = p->syn_unanswered + syn_sent - synack_rcvd;
        p->syn_unanswered = u > 0 ? u : 0;
        p->syn_pending_since = p->syn_unanswered ? some(now) : NONE;
        if (p->passive_failing) {
            p->passive_failing = 0;
            if (p->state == S_SUSPECT || p->state == S_DOWN)
                maybe_recover(p, now);
        }
    } else if (syn_sent > 0) {
        p->syn_unanswered += syn_sent;
        if (!p->syn_pending_since.ok)
            p->syn_pending_since = some(now);
    }
    check_passive(p, now);
    Py_RETURN_NONE;
}

static PyObject *PathState_next_deadline(PathState *p, PyObject *Py_UNUSED(ignored))
{
    opt_t t = NONE;
    if (!ready(p))
        return NULL;
#define CONSIDER(x) do { double x_ = (x); if (!t.ok || x_ < t.v) t = some(x_); } while (0)
    if ((p->state == S_UP || p->state == S_SUSPECT) && p->last_reply.ok) {
        double last = fmax(p->last_reply.v, p->quiet_from);
        if (p->state == S_UP)
            CONSIDER(last + p->suspect_after);
        CONSIDER(last + p->detect);
    }
    if (p->passive_failing)
        CONSIDER(p->last_syn.v + PASSIVE_FORGET_S);
    else if (p->syn_pending_since.ok && p->syn_unanswered >= PASSIVE_MIN_SYNS)
        CONSIDER(p->syn_pending_since.v + fmax(p->passive_detect, SYN_RTO_S));
#undef CONSIDER
    return opt_py(t);
}

static PyObject *PathState_snapshot(PathState *p, PyObject *Py_UNUSED(ignored))
{
    return ready(p) ? snapshot(p) : NULL;
}

static PyObject *PathState_score(PathState *p, PyObject *const *a, Py_ssize_t n)
{
    if (!ready(p))
        return NULL;
    if (n != 2) {
        PyErr_SetString(PyExc_TypeError, "score(name, now)");
        return NULL;
    }
    double now = PyFloat_AsDouble(a[1]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    if (PATHSCORE == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "argoctl._pathcore.use() was not called");
        return NULL;
    }
    return score(p, a[0], now);
}

static PyObject *get_state(PathState *p, void *c)
{
    PyObject *s = STATES[p->state];
    if (s == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "argoctl._pathcore.use() was not called");
        return NULL;
    }
    Py_INCREF(s);
    return s;
}

static PyObject *get_self(PathState *p, void *c)
{
    Py_INCREF(p);
    return (PyObject *)p;
}

#define OPT_GETTER(field)                                                      \
    static PyObject *get_##field(PathState *p, void *c) { return opt_py(p->field); }
OPT_GETTER(srtt)
OPT_GETTER(rttvar)
OPT_GETTER(last_rtt)
OPT_GETTER(last_reply)
OPT_GETTER(recovered_at)
OPT_GETTER(gap_from)
OPT_GETTER(gap_to)
OPT_GETTER(smoothed)

static PyObject *get_counts(PathState *p, void *c) { return counts_dict(p); }
static PyObject *get_loss(PathState *p, void *c) { return PyFloat_FromDouble(loss_of(p)); }

static PyObject *get_in_doubt(PathState *p, void *c)
{
    int s = p->state;
    return PyBool_FromLong(s == S_SUSPECT || s == S_UNKNOWN ||
                           (s == S_DOWN && p->consecutive_ok > 0));
}

static PyObject *get_recent(PathState *p, void *c)
{
    PyObject *t = PyTuple_New(p->recent.len);
    for (int i = 0; t && i < p->recent.len; i++) {
        PyObject *v = PyFloat_FromDouble(ring_get(&p->recent, i));
        if (v == NULL) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

static PyObject *get_suppressed(PathState *p, void *c) { return PyBool_FromLong(p->suppressed); }
static PyObject *get_fresh_down(PathState *p, void *c) { return PyBool_FromLong(p->fresh_down); }

static PyObject *get_silent_since(PathState *p, void *c)    /* Estimator.silent_since */
{
    if (!p->last_reply.ok)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(p->last_reply.v >= p->quiet_from ? p->last_reply.v : p->quiet_from);
}

static PyGetSetDef PathState_getset[] = {
    {"state", (getter)get_state, NULL, "estimator.State", NULL},
    {"est", (getter)get_self, NULL, "the estimator (this object: engine._PathState.est)", NULL},
    {"srtt", (getter)get_srtt, NULL, "smoothed RTT (s) or None", NULL},
    {"rttvar", (getter)get_rttvar, NULL, NULL, NULL},
    {"last_rtt", (getter)get_last_rtt, NULL, NULL, NULL},
    {"last_reply", (getter)get_last_reply, NULL, NULL, NULL},
    {"recovered_at", (getter)get_recovered_at, NULL, NULL, NULL},
    {"smoothed", (getter)get_smoothed, NULL, "the engine's smoothed score (ms) or None", NULL},
    {"suppressed", (getter)get_suppressed, NULL, NULL, NULL},
    {"fresh_down", (getter)get_fresh_down, NULL, "a failure the engine has not judged", NULL},
    {"silent_since", (getter)get_silent_since, NULL, "Estimator.silent_since", NULL},
    {"gap_from", (getter)get_gap_from, NULL, "Estimator.gap_from", NULL},
    {"gap_to", (getter)get_gap_to, NULL, "Estimator.gap_to", NULL},
    {"counts", (getter)get_counts, NULL, "a copy of the counters", NULL},
    {"loss", (getter)get_loss, NULL, NULL, NULL},
    {"in_doubt", (getter)get_in_doubt, NULL, NULL, NULL},
    {"recent", (getter)get_recent, NULL, "latest active RTTs (s), oldest first", NULL},
    {NULL}};

static PyMemberDef PathState_members[] = {
    {"since", T_DOUBLE, offsetof(PathState, since), READONLY, NULL},
    {"jitter", T_DOUBLE, offsetof(PathState, jitter), READONLY, NULL},
    {"consecutive_ok", T_LONGLONG, offsetof(PathState, consecutive_ok), READONLY, NULL},
    {"consecutive_miss", T_LONGLONG, offsetof(PathState, consecutive_miss), READONLY, NULL},
    {"version", T_ULONGLONG, offsetof(PathState, version), READONLY, NULL},
    {"interval", T_DOUBLE, offsetof(PathState, interval), READONLY, NULL},
    {"detect", T_DOUBLE, offsetof(PathState, detect), READONLY, NULL},
    {"suspect_after", T_DOUBLE, offsetof(PathState, suspect_after), READONLY, NULL},
    {"pace_n", T_LONG, offsetof(PathState, pace_n), READONLY, NULL},
    {"passive_detect", T_DOUBLE, offsetof(PathState, passive_detect), READONLY, NULL},
    {"penalty", T_DOUBLE, offsetof(PathState, penalty), READONLY, NULL},
    {"dests", T_OBJECT_EX, offsetof(PathState, dests), READONLY, NULL},
    {NULL}};

static PyMethodDef PathState_methods[] = {
    {"on_reply", (PyCFunction)(void (*)(void))PathState_on_reply, METH_VARARGS | METH_KEYWORDS,
     "on_reply(seq, sent_at, rtt, now): a probe's reply (rtt in s; None: now - sent_at)"},
    {"on_timeout", (PyCFunction)(void (*)(void))PathState_on_timeout,
     METH_VARARGS | METH_KEYWORDS, "on_timeout(seq, now): a probe got no reply in time"},
    {"on_result", (PyCFunction)(void (*)(void))PathState_on_result, METH_VARARGS | METH_KEYWORDS,
     "on_result(seq, sent_at, rtt, now): rtt None = lost"},
    {"on_lost", (PyCFunction)(void (*)(void))PathState_on_lost, METH_VARARGS | METH_KEYWORDS,
     "Estimator.on_lost"},
    {"tick", (PyCFunction)(void (*)(void))PathState_tick, METH_VARARGS | METH_KEYWORDS,
     "tick(now): time-based detection"},
    {"on_passive", (PyCFunction)(void (*)(void))PathState_on_passive, METH_VARARGS | METH_KEYWORDS,
     "on_passive(syn_sent, synack_rcvd, rtt_samples, now): datapath deltas"},
    {"judge", (PyCFunction)PathState_judge, METH_O, "Estimator.judge(common_mode)"},
    {"pace", (PyCFunction)(void (*)(void))PathState_pace, METH_VARARGS | METH_KEYWORDS,
     "pace(n, timing, now): probed every n intervals from now on (Estimator.pace)"},
    {"next_deadline", (PyCFunction)PathState_next_deadline, METH_NOARGS,
     "when tick() would next change the state by time alone, or None"},
    {"snapshot", (PyCFunction)PathState_snapshot, METH_NOARGS, "an estimator.Snapshot"},
    {"score", (PyCFunction)(void (*)(void))PathState_score, METH_FASTCALL,
     "score(name, now) -> engine.PathScore"},
    {NULL}};

static PyTypeObject PathStateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "argoctl._pathcore.PathState",
    .tp_basicsize = sizeof(PathState),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "PathState(policy, tuning, now=0.0): estimator.Estimator + engine._PathState",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)PathState_init,
    .tp_dealloc = (destructor)PathState_dealloc,
    .tp_traverse = (traverseproc)PathState_traverse,
    .tp_clear = (inquiry)PathState_clear,
    .tp_methods = PathState_methods,
    .tp_members = PathState_members,
    .tp_getset = PathState_getset,
};

/* ---- the capsule: _echo.c's channels feed bound PathStates directly ------- */

static int is_path_state(PyObject *o)
{
    return Py_TYPE(o) == &PathStateType && ((PathState *)o)->dests != NULL;
}

/* ProbeScheduler.deliver + Engine.probe_result for one result (times in ns):
 * 1 when it changed the path's state, 0 when not, -1 when `o` is no PathState. */
static int feed(PyObject *o, uint64_t seq, int64_t sent_ns, int64_t at_ns, int lost)
{
    if (!is_path_state(o))
        return -1;
    PathState *p = (PathState *)o;
    int before = p->state;
    if (lost)
        on_timeout(p, (int64_t)seq, (double)at_ns / 1e9);
    else
        on_reply(p, (int64_t)seq, (double)sent_ns / 1e9,
                 some((double)(at_ns > sent_ns ? at_ns - sent_ns : 0) / 1e9),
                 (double)at_ns / 1e9);
    return p->state != before;
}

static const pathcore_api API = {PATHCORE_API_VERSION, feed, is_path_state};

static PyObject *use(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"states", "snapshot", "pathscore", NULL};
    PyObject *states, *snap, *ps;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO", kwlist, &states, &snap, &ps))
        return NULL;
    if (!PyTuple_Check(states) || PyTuple_GET_SIZE(states) != S_N) {
        PyErr_SetString(PyExc_TypeError, "states: (UNKNOWN, UP, SUSPECT, DOWN)");
        return NULL;
    }
    for (int i = 0; i < S_N; i++) {
        Py_INCREF(PyTuple_GET_ITEM(states, i));
        Py_XSETREF(STATES[i], PyTuple_GET_ITEM(states, i));
    }
    Py_INCREF(snap);
    Py_XSETREF(SNAPSHOT, snap);
    Py_INCREF(ps);
    Py_XSETREF(PATHSCORE, ps);
    SNAP_DIRECT = slot_offsets(snap, SNAP_NAMES, SNAP_FIELDS, SNAP_OFF);
    SCORE_DIRECT = slot_offsets(ps, SCORE_NAMES, SCORE_FIELDS, SCORE_OFF);
    return Py_BuildValue("(OO)", SNAP_DIRECT ? Py_True : Py_False,
                         SCORE_DIRECT ? Py_True : Py_False);
}

static PyMethodDef module_methods[] = {
    {"use", (PyCFunction)(void (*)(void))use, METH_VARARGS | METH_KEYWORDS,
     "use(states, snapshot, pathscore): the Python types PathState hands out;\n"
     "returns whether each is filled slot by slot (True) or called (False)"},
    {NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "argoctl._pathcore",
                                    "One path's measurements and score, compiled.", -1,
                                    module_methods};

PyMODINIT_FUNC PyInit__pathcore(void)
{
    if (PyType_Ready(&PathStateType) < 0)
        return NULL;
    for (int i = 0; i < C_N; i++)
        if (COUNT_KEYS[i] == NULL && (COUNT_KEYS[i] = PyUnicode_InternFromString(COUNT_NAMES[i])) == NULL)
            return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PathStateType);
    if (PyModule_AddObject(m, "PathState", (PyObject *)&PathStateType) < 0) {
        Py_DECREF(&PathStateType);
        Py_DECREF(m);
        return NULL;
    }
    PyObject *cap = PyCapsule_New((void *)&API, PATHCORE_CAPSULE, NULL);
    if (cap == NULL || PyModule_AddObject(m, "_C_API", cap) < 0) {
        Py_XDECREF(cap);
        Py_DECREF(m);
        return NULL;
    }
    /* the constants this file shares with estimator.py, by value, for the tests */
    PyObject *c = Py_BuildValue("{s:d,s:d,s:d,s:i,s:i,s:d,s:d,s:i,s:i}",
                                "RTT_BETA", RTT_BETA, "JITTER_GAIN", JITTER_GAIN,
                                "PASSIVE_WEIGHT", PASSIVE_WEIGHT, "PASSIVE_MIN_SYNS",
                                PASSIVE_MIN_SYNS, "RECENT", RECENT, "SYN_RTO_S", SYN_RTO_S,
                                "PASSIVE_FORGET_S", PASSIVE_FORGET_S, "SNAP_FIELDS", SNAP_FIELDS,
                                "SCORE_FIELDS", SCORE_FIELDS);
    if (c == NULL || PyModule_AddObject(m, "CONSTANTS", c) < 0) {
        Py_XDECREF(c);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "RECENT", RECENT);
    return m;
}
