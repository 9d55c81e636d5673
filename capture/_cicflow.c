/*
 * tapwatch.capture._cicflow: the compiled twin of capture/cicflow.py's CicFlow and of capture/fastpath.py's
 * py_decode (issue 16: the meter runs CICFlowMeter's state machine once per packet and was the sensor's
 * ceiling in plain Python).
 *
 * The Python code is the definition; this file follows it statement by statement and must not drift from it.
 * CicFlow.snapshot() returns a tuple equal to the Python one, element by element and type by type (ints as
 * int, the unset minima and maxima as float inf / -inf, flags as {flag byte: count} in first-seen order, icmp
 * as given), and the reader restores snapshots with the Python class, so both give the same feature values.
 * tests/unit/test_cicflow_compiled.py (random packets, snapshot after every one, and decode) and
 * tests/corpus/test_meter_parity.py (pcap to CSV, byte for byte) bind the two: change them together.
 *
 * Range: Python's ints are unbounded. Here inputs are int64, sums int64 and sums of squares unsigned __int128
 * (a gap of 10**12 us squares past int64), every step overflow-checked: a flow that would leave the range
 * raises OverflowError and stays broken (every later call raises too), so it never reports a wrong value.
 * Flag bytes must be 0..255 (ValueError otherwise); icmp must be None or a tuple of two ints (TypeError).
 *
 * The hot path uses the vectorcall conventions (METH_FASTCALL for add, METH_O for decode's single argument, a
 * tp_vectorcall constructor) and interned attribute names. add allocates nothing: counts per flag byte sit in
 * the object (8 distinct bytes per direction inline; the rare flow with more grows a heap array before any
 * state changes). decode allocates only its result.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

typedef unsigned __int128 u128;

enum { OPEN = 0, FIRST_FIN = 1, SECOND_FIN = 2, READY = 3 }; /* FlowGenerator's TCP termination states */
#define FIN 0x01
#define RST 0x04
#define ACK 0x10
#define BULK_MIN_PACKETS 4       /* BasicFlow.updateForwardBulk: a bulk is 4+ data packets ... */
#define BULK_MAX_GAP_US 1000000  /* ... with gaps of at most 1 s */
#define FLAGS_INLINE 8           /* distinct flag bytes per direction kept in the object itself */
#define N_STATE 50

/* Python: a min starting at inf and a max at -inf, both updated with the same value each time. */
typedef struct {
    int64_t lo, hi;
    int has;
} Range;

typedef struct {
    int64_t duration, packets, total, states, count_helper, start_helper, size_helper, last_ts;
} Bulk;

typedef struct {
    int n, cap;
    uint8_t *hkeys; /* heap arrays once more than FLAGS_INLINE distinct bytes were seen, else NULL */
    int64_t *hcounts;
    int64_t fin; /* packets with FIN set: CicFlow._count_flag(counts, FIN) */
    uint8_t ikeys[FLAGS_INLINE];
    int64_t icounts[FLAGS_INLINE];
} Flags;

typedef struct {
    PyObject_HEAD
    int64_t protocol, activity_timeout_us, carried_us, tcp_state;
    int64_t start_us, last_us, start_active, end_active;
    int64_t fwd_n, fwd_sum, fwd_header, fwd_first, fwd_last;
    int64_t bwd_n, bwd_sum, bwd_header, bwd_first, bwd_last;
    int64_t act_n, act_sum, idl_n, idl_sum;
    int64_t act_data_fwd, min_seg_fwd, init_win_fwd, init_win_bwd;
    u128 iat_sq, fwd_sq, bwd_sq, fiat_sq, biat_sq, act_sq, idl_sq;
    Range iat, fwd, bwd, fiat, biat, act, idl;
    Bulk bulk_fwd, bulk_bwd;
    Flags fwd_flags, bwd_flags;
    PyObject *icmp; /* None or a (type, code) tuple, as given */
    int broken;
} CicFlowObject;

static PyTypeObject CicFlowType;

/* -- checked arithmetic --------------------------------------------------------------------------------- */
static inline int64_t sub(int64_t a, int64_t b, int *ovf) {
    int64_t r;
    *ovf |= __builtin_sub_overflow(a, b, &r);
    return r;
}

static inline void add_to(int64_t *acc, int64_t v, int *ovf) { *ovf |= __builtin_add_overflow(*acc, v, acc); }

static inline void add_sq(u128 *acc, int64_t v, int *ovf) {
    u128 sq = (u128)((__int128)v * v); /* |v| <= 2**63, so v * v <= 2**126 */
    *ovf |= __builtin_add_overflow(*acc, sq, acc);
}

static inline void range_add(Range *r, int64_t v) {
    if (!r->has) {
        r->lo = r->hi = v;
        r->has = 1;
        return;
    }
    if (v < r->lo) r->lo = v;
    if (v > r->hi) r->hi = v;
}

/* -- flag counts ----------------------------------------------------------------------------------------- */
static inline uint8_t *flag_keys(Flags *f) { return f->hkeys ? f->hkeys : f->ikeys; }
static inline int64_t *flag_counts(Flags *f) { return f->hcounts ? f->hcounts : f->icounts; }

/* Room for one more distinct byte when `flag` is new and the arrays are full: before any state changes. */
static int flags_reserve(Flags *f, int flag) {
    if (!flag || f->n < f->cap) return 0;
    uint8_t *k = flag_keys(f);
    for (int i = 0; i < f->n; i++)
        if (k[i] == flag) return 0;
    int cap = f->cap * 2 > 256 ? 256 : f->cap * 2;
    uint8_t *nk = PyMem_Malloc((size_t)cap);
    int64_t *nc = PyMem_Malloc(sizeof(int64_t) * (size_t)cap);
    if (!nk || !nc) {
        PyMem_Free(nk);
        PyMem_Free(nc);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(nk, k, (size_t)f->n);
    memcpy(nc, flag_counts(f), sizeof(int64_t) * (size_t)f->n);
    PyMem_Free(f->hkeys);
    PyMem_Free(f->hcounts);
    f->hkeys = nk;
    f->hcounts = nc;
    f->cap = cap;
    return 0;
}

static inline void flags_add(Flags *f, int flag) {
    uint8_t *k = flag_keys(f);
    int64_t *c = flag_counts(f);
    int i = 0;
    while (i < f->n && k[i] != flag) i++;
    if (i == f->n) {
        k[i] = (uint8_t)flag;
        c[i] = 0;
        f->n++;
    }
    c[i]++;
    if (flag & FIN) f->fin++;
}

/* -- the state machine (cicflow.py: Bulk.update, CicFlow._count, add, _tcp_state) ------------------------- */
static inline void bulk_update(Bulk *b, int64_t ts, int64_t size, int *ovf) {
    if (b->start_helper == 0 || sub(ts, b->last_ts, ovf) > BULK_MAX_GAP_US) {
        b->start_helper = b->last_ts = ts;
        b->count_helper = 1;
        b->size_helper = size;
        return;
    }
    b->count_helper++;
    add_to(&b->size_helper, size, ovf);
    if (b->count_helper == BULK_MIN_PACKETS) {
        b->states++;
        add_to(&b->packets, b->count_helper, ovf);
        add_to(&b->total, b->size_helper, ovf);
        add_to(&b->duration, sub(ts, b->start_helper, ovf), ovf);
    } else if (b->count_helper > BULK_MIN_PACKETS) {
        b->packets++;
        add_to(&b->total, size, ovf);
        add_to(&b->duration, sub(ts, b->last_ts, ovf), ovf);
    }
    b->last_ts = ts;
}

static inline void count(CicFlowObject *s, int64_t t, int fwd, int64_t payload, int64_t header, int flags,
                         int64_t window, int *ovf) {
    if (fwd) {
        s->fwd_n++;
        add_to(&s->fwd_sum, payload, ovf);
        add_sq(&s->fwd_sq, payload, ovf);
        range_add(&s->fwd, payload);
        add_to(&s->fwd_header, header, ovf);
        s->fwd_last = t;
        if (payload) s->act_data_fwd++;
        if (flags) flags_add(&s->fwd_flags, flags);
        if (s->bulk_bwd.last_ts > s->bulk_fwd.start_helper) s->bulk_fwd.start_helper = 0;
        if (payload > 0) bulk_update(&s->bulk_fwd, t, payload, ovf);
    } else {
        s->bwd_n++;
        add_to(&s->bwd_sum, payload, ovf);
        add_sq(&s->bwd_sq, payload, ovf);
        range_add(&s->bwd, payload);
        add_to(&s->bwd_header, header, ovf);
        s->bwd_last = t;
        s->init_win_bwd = window; /* the release's build keeps the last backward window */
        if (flags) flags_add(&s->bwd_flags, flags);
        if (s->bulk_fwd.last_ts > s->bulk_bwd.start_helper) s->bulk_bwd.start_helper = 0;
        if (payload > 0) bulk_update(&s->bulk_bwd, t, payload, ovf);
    }
}

static inline void tcp_state(CicFlowObject *s, int flags) {
    if (flags & FIN) {
        if (s->tcp_state == OPEN)
            s->tcp_state = FIRST_FIN;
        else if (s->tcp_state == FIRST_FIN && s->fwd_flags.fin && s->bwd_flags.fin)
            s->tcp_state = SECOND_FIN;
    } else if ((flags & RST) || ((flags & ACK) && s->tcp_state == SECOND_FIN)) {
        s->tcp_state = READY;
    }
}

static void add_packet(CicFlowObject *s, int64_t t, int fwd, int64_t payload, int64_t header, int flags,
                       int64_t window, int *ovf) {
    int64_t since = sub(t, s->end_active, ovf); /* updateActiveIdleTime, before BasicFlow.addPacket */
    if (since > s->activity_timeout_us) {
        int64_t active = sub(s->end_active, s->start_active, ovf);
        if (active > 0) {
            s->act_n++;
            add_to(&s->act_sum, active, ovf);
            add_sq(&s->act_sq, active, ovf);
            range_add(&s->act, active);
        }
        s->idl_n++;
        add_to(&s->idl_sum, since, ovf);
        add_sq(&s->idl_sq, since, ovf);
        range_add(&s->idl, since);
        s->start_active = t;
    }
    s->end_active = t;
    int64_t gap = sub(t, s->last_us, ovf);
    add_sq(&s->iat_sq, gap, ovf);
    range_add(&s->iat, gap);
    s->last_us = t;
    if (fwd) {
        if (s->fwd_n) {
            int64_t g = sub(t, s->fwd_last, ovf);
            add_sq(&s->fiat_sq, g, ovf);
            range_add(&s->fiat, g);
        } else {
            s->fwd_first = t;
        }
        if (header < s->min_seg_fwd) s->min_seg_fwd = header;
    } else {
        if (s->bwd_n) {
            int64_t g = sub(t, s->bwd_last, ovf);
            add_sq(&s->biat_sq, g, ovf);
            range_add(&s->biat, g);
        } else {
            s->bwd_first = t;
        }
    }
    count(s, t, fwd, payload, header, flags, window, ovf);
    if (flags && s->protocol == 6) tcp_state(s, flags);
}

/* -- argument handling ------------------------------------------------------------------------------------ */
static inline int as_i64(PyObject *o, int64_t *out) {
    int of;
    long long v = PyLong_AsLongLongAndOverflow(o, &of); /* __index__ for non-ints, TypeError for float */
    if (of) {
        PyErr_SetString(PyExc_OverflowError, "CicFlow: an argument does not fit in 64 bits");
        return -1;
    }
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
}

static inline int as_flags(PyObject *o, int *out) {
    int64_t v;
    if (as_i64(o, &v) < 0) return -1;
    if (v < 0 || v > 255) {
        PyErr_Format(PyExc_ValueError, "CicFlow: flags must be a TCP flag byte (0..255), got %lld", (long long)v);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int broken_error(void) {
    PyErr_SetString(PyExc_OverflowError,
                    "CicFlow: this flow's counters left the compiled meter's range (int64 sums, 128-bit squares)");
    return -1;
}

/* Positional and keyword arguments of a vectorcall into out[0..n), as Python binds them. */
static int bind(const char *fn, PyObject *const *names, int n, int required, PyObject *const *args,
                Py_ssize_t nargs, PyObject *kwnames, PyObject **out) {
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d positional arguments (%zd given)", fn, n, nargs);
        return -1;
    }
    for (int i = 0; i < n; i++) out[i] = i < nargs ? args[i] : NULL;
    Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t j = 0; j < nk; j++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, j);
        int i = 0;
        while (i < n && names[i] != key) i++;
        if (i == n)
            for (i = 0; i < n; i++) {
                int eq = PyObject_RichCompareBool(names[i], key, Py_EQ);
                if (eq < 0) return -1;
                if (eq) break;
            }
        if (i == n) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%S'", fn, key);
            return -1;
        }
        if (out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%S'", fn, key);
            return -1;
        }
        out[i] = args[nargs + j];
    }
    for (int i = 0; i < required; i++)
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%S'", fn, names[i]);
            return -1;
        }
    return 0;
}

/* -- CicFlow ---------------------------------------------------------------------------------------------- */
enum { A_PROTOCOL, A_TIME, A_FWD, A_PAYLOAD, A_HEADER, A_FLAGS, A_WINDOW, A_TIMEOUT, A_ICMP, A_CARRIED, N_INIT };
static const char *INIT_NAMES[N_INIT] = {"protocol", "time_us", "fwd", "payload", "header", "flags",
                                         "window", "activity_timeout_us", "icmp", "carried_us"};
static const char *ADD_NAMES[6] = {"t", "fwd", "payload", "header", "flags", "window"};
static PyObject *init_names[N_INIT], *add_names[6];

static int valid_icmp(PyObject *icmp) {
    if (icmp == Py_None) return 0;
    if (PyTuple_Check(icmp) && PyTuple_GET_SIZE(icmp) == 2 && PyLong_Check(PyTuple_GET_ITEM(icmp, 0)) &&
        PyLong_Check(PyTuple_GET_ITEM(icmp, 1)))
        return 0;
    PyErr_Format(PyExc_TypeError, "CicFlow: icmp must be None or a (type, code) tuple of ints, not %R", icmp);
    return -1;
}

static PyObject *cicflow_make(PyTypeObject *type, PyObject **a) {
    int64_t protocol, t, payload, header, window, timeout = 5000000, carried = 0;
    int flags, fwd;
    PyObject *icmp = a[A_ICMP] ? a[A_ICMP] : Py_None;
    if (as_i64(a[A_PROTOCOL], &protocol) < 0 || as_i64(a[A_TIME], &t) < 0 || (fwd = PyObject_IsTrue(a[A_FWD])) < 0 ||
        as_i64(a[A_PAYLOAD], &payload) < 0 || as_i64(a[A_HEADER], &header) < 0 || as_flags(a[A_FLAGS], &flags) < 0 ||
        as_i64(a[A_WINDOW], &window) < 0 || (a[A_TIMEOUT] && as_i64(a[A_TIMEOUT], &timeout) < 0) ||
        valid_icmp(icmp) < 0 || (a[A_CARRIED] && as_i64(a[A_CARRIED], &carried) < 0))
        return NULL;
    CicFlowObject *s = (CicFlowObject *)type->tp_alloc(type, 0); /* zeroed: every Range unset, every sum 0 */
    if (!s) return NULL;
    s->protocol = protocol;
    s->activity_timeout_us = timeout;
    s->carried_us = carried;
    Py_INCREF(icmp);
    s->icmp = icmp;
    s->tcp_state = OPEN;
    s->start_us = s->last_us = s->start_active = s->end_active = t;
    s->fwd_first = s->fwd_last = s->bwd_first = s->bwd_last = t;
    s->fwd_flags.cap = s->bwd_flags.cap = FLAGS_INLINE;
    /* BasicFlow.firstPacket: the first packet sets the fwd window and min segment size; the release's build
     * counts no data packet here. */
    if (fwd) {
        s->min_seg_fwd = header;
        s->init_win_fwd = window;
    }
    int ovf = 0;
    count(s, t, fwd, payload, header, flags, window, &ovf);
    s->act_data_fwd = 0;
    if (ovf) {
        Py_DECREF(s);
        broken_error();
        return NULL;
    }
    return (PyObject *)s;
}

static PyObject *cicflow_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    PyObject *a[N_INIT];
    if (bind("CicFlow", init_names, N_INIT, A_TIMEOUT, args, PyVectorcall_NARGS(nargsf), kwnames, a) < 0)
        return NULL;
    return cicflow_make((PyTypeObject *)type, a);
}

static PyObject *cicflow_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *kw[N_INIT + 1];
    for (int i = 0; i < N_INIT; i++) kw[i] = (char *)INIT_NAMES[i];
    PyObject *a[N_INIT] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOO|OOO:CicFlow", kw, &a[0], &a[1], &a[2], &a[3], &a[4],
                                     &a[5], &a[6], &a[7], &a[8], &a[9]))
        return NULL;
    return cicflow_make(type, a);
}

static void cicflow_dealloc(CicFlowObject *s) {
    PyMem_Free(s->fwd_flags.hkeys);
    PyMem_Free(s->fwd_flags.hcounts);
    PyMem_Free(s->bwd_flags.hkeys);
    PyMem_Free(s->bwd_flags.hcounts);
    Py_XDECREF(s->icmp);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *cicflow_add(CicFlowObject *s, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *bound[6];
    PyObject *const *a = args;
    if (nargs != 6 || kwnames) {
        if (bind("add", add_names, 6, 6, args, nargs, kwnames, bound) < 0) return NULL;
        a = bound;
    }
    int64_t t, payload, header, window;
    int fwd, flags;
    if (as_i64(a[0], &t) < 0) return NULL;
    if (a[1] == Py_True)
        fwd = 1;
    else if (a[1] == Py_False)
        fwd = 0;
    else if ((fwd = PyObject_IsTrue(a[1])) < 0)
        return NULL;
    if (as_i64(a[2], &payload) < 0 || as_i64(a[3], &header) < 0 || as_flags(a[4], &flags) < 0 ||
        as_i64(a[5], &window) < 0)
        return NULL;
    if (s->broken) return broken_error(), NULL;
    if (flags_reserve(fwd ? &s->fwd_flags : &s->bwd_flags, flags) < 0) return NULL;
    int ovf = 0;
    add_packet(s, t, fwd, payload, header, flags, window, &ovf);
    if (ovf) {
        s->broken = 1;
        return broken_error(), NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *u128_to_py(u128 v) {
    if (v <= UINT64_MAX) return PyLong_FromUnsignedLongLong((unsigned long long)v);
    PyObject *hi = PyLong_FromUnsignedLongLong((unsigned long long)(v >> 64));
    PyObject *lo = PyLong_FromUnsignedLongLong((unsigned long long)v);
    PyObject *sixty_four = PyLong_FromLong(64);
    PyObject *shifted = hi && sixty_four ? PyNumber_Lshift(hi, sixty_four) : NULL;
    PyObject *out = shifted && lo ? PyNumber_Or(shifted, lo) : NULL;
    Py_XDECREF(hi);
    Py_XDECREF(lo);
    Py_XDECREF(sixty_four);
    Py_XDECREF(shifted);
    return out;
}

static PyObject *inf, *minus_inf; /* made once: cicflow.py's _INF and -_INF */
static PyObject *py_lo(const Range *r) { return r->has ? PyLong_FromLongLong(r->lo) : Py_NewRef(inf); }
static PyObject *py_hi(const Range *r) { return r->has ? PyLong_FromLongLong(r->hi) : Py_NewRef(minus_inf); }
static PyObject *py_i(int64_t v) { return PyLong_FromLongLong(v); }

static PyObject *py_flags(Flags *f) {
    PyObject *d = PyDict_New();
    uint8_t *k = flag_keys(f);
    int64_t *c = flag_counts(f);
    for (int i = 0; d && i < f->n; i++) {
        PyObject *key = PyLong_FromLong(k[i]), *val = PyLong_FromLongLong(c[i]);
        if (!key || !val || PyDict_SetItem(d, key, val) < 0) Py_CLEAR(d);
        Py_XDECREF(key);
        Py_XDECREF(val);
    }
    return d;
}

static PyObject *py_bulk(const Bulk *b) {
    return Py_BuildValue("(LLLL)", (long long)b->duration, (long long)b->packets, (long long)b->total,
                         (long long)b->states);
}

static PyObject *py_icmp(PyObject *o) {
    Py_INCREF(o);
    return o;
}

/* The state in cicflow._STATE_NAMES order (CicFlow.__slots__ without the two Bulk objects). */
static PyObject *state_tuple(CicFlowObject *s) {
    PyObject *items[N_STATE] = {
        py_i(s->act_data_fwd), py_hi(&s->act), py_lo(&s->act), py_i(s->act_n), u128_to_py(s->act_sq),
        py_i(s->act_sum), py_i(s->activity_timeout_us), py_hi(&s->biat), py_lo(&s->biat), u128_to_py(s->biat_sq),
        py_i(s->bwd_first), py_flags(&s->bwd_flags), py_i(s->bwd_header), py_i(s->bwd_last), py_hi(&s->bwd),
        py_lo(&s->bwd), py_i(s->bwd_n), u128_to_py(s->bwd_sq), py_i(s->bwd_sum), py_i(s->carried_us),
        py_i(s->end_active), py_hi(&s->fiat), py_lo(&s->fiat), u128_to_py(s->fiat_sq), py_i(s->fwd_first),
        py_flags(&s->fwd_flags), py_i(s->fwd_header), py_i(s->fwd_last), py_hi(&s->fwd), py_lo(&s->fwd),
        py_i(s->fwd_n), u128_to_py(s->fwd_sq), py_i(s->fwd_sum), py_hi(&s->iat), py_lo(&s->iat),
        u128_to_py(s->iat_sq), py_icmp(s->icmp), py_hi(&s->idl), py_lo(&s->idl), py_i(s->idl_n),
        u128_to_py(s->idl_sq), py_i(s->idl_sum), py_i(s->init_win_bwd), py_i(s->init_win_fwd), py_i(s->last_us),
        py_i(s->min_seg_fwd), py_i(s->protocol), py_i(s->start_active), py_i(s->start_us), py_i(s->tcp_state),
    };
    PyObject *tuple = PyTuple_New(N_STATE);
    int ok = tuple != NULL;
    for (int i = 0; i < N_STATE; i++) {
        ok = ok && items[i];
        if (tuple)
            PyTuple_SET_ITEM(tuple, i, items[i]); /* steals; a NULL slot is fine for the tuple's dealloc */
        else
            Py_XDECREF(items[i]);
    }
    if (!ok) Py_CLEAR(tuple);
    return tuple;
}

static PyObject *cicflow_snapshot(CicFlowObject *s, PyObject *Py_UNUSED(ignored)) {
    if (s->broken) return broken_error(), NULL;
    PyObject *state = state_tuple(s), *bf = py_bulk(&s->bulk_fwd), *bb = py_bulk(&s->bulk_bwd);
    PyObject *out = state && bf && bb ? PyTuple_Pack(3, state, bf, bb) : NULL;
    Py_XDECREF(state);
    Py_XDECREF(bf);
    Py_XDECREF(bb);
    return out;
}

static PyObject *cicflow_packets(CicFlowObject *s, void *Py_UNUSED(closure)) {
    return PyLong_FromLongLong(s->fwd_n + s->bwd_n);
}


/* -- add_raw: a packet read straight from NFStream's struct nf_packet ------------------------------------------
 * NFStream builds a 28-field namedtuple per packet for its plugins (pythonize_packet: a third of the meter's
 * time); the plugin's fast path skips it and hands this function the struct's address. The layout is not
 * assumed: set_layout() receives every offset, size and flag bit from cffi's own description of the struct
 * (capture/fastpath.py: packet_layout), and add_raw() refuses to run before it. add_raw() does only the common
 * case of CicPlugin._update (a TCP, UDP or other non-ICMP packet on a flow not ready for termination); it
 * returns -1 for anything else, having changed nothing, and the plugin runs the reference path. */
enum { L_DIRECTION, L_TIME, L_IP_VERSION, L_PROTOCOL, L_FLAGS, L_RAW_SIZE, L_TRANSPORT_SIZE, L_PAYLOAD_SIZE,
       L_IP_CONTENT_LEN, L_IP_CONTENT, N_LAYOUT };
static Py_ssize_t layout[N_LAYOUT];
static int flag_bit[8]; /* FIN, SYN, RST, PSH, ACK, URG, ECE, CWR: bit of each in the 16-bit flags word */
static int layout_set = 0;

static PyObject *set_layout(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyTuple_Check(args[0]) || !PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[0]) != N_LAYOUT ||
        PyTuple_GET_SIZE(args[1]) != 8) {
        PyErr_SetString(PyExc_TypeError, "set_layout(offsets: 10 ints, flag_bits: 8 ints)");
        return NULL;
    }
    Py_ssize_t off[N_LAYOUT];
    int bits[8];
    for (int i = 0; i < N_LAYOUT; i++) {
        off[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(args[0], i));
        if (off[i] == -1 && PyErr_Occurred()) return NULL;
        if (off[i] < 0 || off[i] > 4096) {
            PyErr_SetString(PyExc_ValueError, "set_layout: an offset out of range");
            return NULL;
        }
    }
    for (int i = 0; i < 8; i++) {
        long b = PyLong_AsLong(PyTuple_GET_ITEM(args[1], i));
        if (b == -1 && PyErr_Occurred()) return NULL;
        if (b < 0 || b > 15) {
            PyErr_SetString(PyExc_ValueError, "set_layout: a flag bit out of range");
            return NULL;
        }
        bits[i] = (int)b;
    }
    memcpy(layout, off, sizeof layout);
    memcpy(flag_bit, bits, sizeof flag_bit);
    layout_set = 1;
    Py_RETURN_NONE;
}

#define FIELD(base, type, which) (*(const type *)((base) + layout[which]))

static PyObject *cicflow_add_raw(CicFlowObject *s, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "add_raw(address, reversed)");
        return NULL;
    }
    if (!layout_set) {
        PyErr_SetString(PyExc_RuntimeError, "add_raw: set_layout() was not called");
        return NULL;
    }
    uintptr_t addr = (uintptr_t)PyLong_AsUnsignedLongLong(args[0]);
    if (addr == (uintptr_t)-1 && PyErr_Occurred()) return NULL;
    int reversed = PyObject_IsTrue(args[1]);
    if (reversed < 0) return NULL;
    if (s->broken) return broken_error(), NULL;
    const char *pkt = (const char *)addr;
    int proto = FIELD(pkt, uint8_t, L_PROTOCOL);
    if (s->tcp_state == READY || proto == 1 || proto == 58) return PyLong_FromLong(-1);
    uint64_t time_ms = FIELD(pkt, uint64_t, L_TIME);
    if (time_ms > (uint64_t)(INT64_MAX / 1000)) return PyLong_FromLong(-1);
    int64_t payload = 0, header = 0, window = 0;
    int flags = 0;
    if (proto == 6) {
        const unsigned char *ip = FIELD(pkt, const unsigned char *, L_IP_CONTENT);
        Py_ssize_t n = FIELD(pkt, uint16_t, L_IP_CONTENT_LEN), off;
        if (FIELD(pkt, uint8_t, L_IP_VERSION) == 4) {
            if (n < 1) return PyLong_FromLong(-1); /* the reference raises here; let it */
            off = (ip[0] & 0x0F) * 4;
        } else {
            off = n > 6 && ip[6] == 6 ? 40 : -1;
        }
        if (off >= 0 && n >= off + 16) {
            flags = ip[off + 13];
            window = (int64_t)ip[off + 14] << 8 | ip[off + 15];
        } else {
            uint16_t word = FIELD(pkt, uint16_t, L_FLAGS);
            for (int i = 0; i < 8; i++) flags |= ((word >> flag_bit[i]) & 1) << i;
        }
        payload = FIELD(pkt, uint16_t, L_PAYLOAD_SIZE);
        header = (int64_t)FIELD(pkt, uint16_t, L_TRANSPORT_SIZE) - payload;
    } else if (proto == 17) {
        payload = FIELD(pkt, uint16_t, L_PAYLOAD_SIZE);
        header = 8;
    }
    int fwd = (FIELD(pkt, uint8_t, L_DIRECTION) == 0) != reversed;
    if (flags_reserve(fwd ? &s->fwd_flags : &s->bwd_flags, flags) < 0) return NULL;
    int ovf = 0;
    add_packet(s, (int64_t)time_ms * 1000, fwd, payload, header, flags, window, &ovf);
    if (ovf) {
        s->broken = 1;
        return broken_error(), NULL;
    }
    long became = s->tcp_state == READY ? (flags & RST ? 1 : 2) : 0;
    return PyLong_FromLong((long)FIELD(pkt, uint16_t, L_RAW_SIZE) << 2 | became);
}

static PyMethodDef cicflow_methods[] = {
    {"add_raw", (PyCFunction)(void (*)(void))cicflow_add_raw, METH_FASTCALL,
     "add_raw(address, reversed)\n--\n\nCicPlugin._update's common case for the struct nf_packet at address: "
     "-1 when it does not apply (nothing changed), else raw_size << 2 | (1: now ready by RST, 2: by FIN)."},
    {"add", (PyCFunction)(void (*)(void))cicflow_add, METH_FASTCALL | METH_KEYWORDS,
     "add(t, fwd, payload, header, flags, window)\n--\n\nFlowGenerator.addPacket for a packet of this open flow."},
    {"snapshot", (PyCFunction)cicflow_snapshot, METH_NOARGS,
     "snapshot()\n--\n\nThe state tuple that tapwatch.capture.cicflow.CicFlow.restore() reads, equal to the "
     "Python class's."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef cicflow_members[] = {
    {"protocol", T_LONGLONG, offsetof(CicFlowObject, protocol), READONLY, NULL},
    {"activity_timeout_us", T_LONGLONG, offsetof(CicFlowObject, activity_timeout_us), READONLY, NULL},
    {"carried_us", T_LONGLONG, offsetof(CicFlowObject, carried_us), READONLY, NULL},
    {"tcp_state", T_LONGLONG, offsetof(CicFlowObject, tcp_state), READONLY, NULL},
    {"start_us", T_LONGLONG, offsetof(CicFlowObject, start_us), READONLY, NULL},
    {"last_us", T_LONGLONG, offsetof(CicFlowObject, last_us), READONLY, NULL},
    {"icmp", T_OBJECT, offsetof(CicFlowObject, icmp), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef cicflow_getset[] = {
    {"packets", (getter)cicflow_packets, NULL, "Packets in both directions.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CicFlowType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tapwatch.capture._cicflow.CicFlow",
    .tp_basicsize = sizeof(CicFlowObject),
    .tp_dealloc = (destructor)cicflow_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "CicFlow(protocol, time_us, fwd, payload, header, flags, window, activity_timeout_us=5000000, "
              "icmp=None, carried_us=0)\n--\n\n"
              "One CICFlowMeter flow: the compiled twin of tapwatch.capture.cicflow.CicFlow (same arguments, "
              "same add(), an equal snapshot()).",
    .tp_methods = cicflow_methods,
    .tp_members = cicflow_members,
    .tp_getset = cicflow_getset,
    .tp_new = cicflow_new,
    .tp_vectorcall = cicflow_vectorcall,
};

/* -- decode (fastpath.py_decode) ---------------------------------------------------------------------------- */
enum { P_PROTOCOL, P_IP_PACKET, P_IP_VERSION, P_PAYLOAD_SIZE, P_TRANSPORT_SIZE, P_FIN, P_SYN, P_RST, P_PSH, P_ACK,
       P_URG, P_ECE, P_CWR, N_ATTR };
static const char *ATTR_NAMES[N_ATTR] = {"protocol", "ip_packet", "ip_version", "payload_size", "transport_size",
                                         "fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr"};
static PyObject *attr[N_ATTR];

/* Python's `o == v` for a small int literal v: -1 on error. */
static int eq_int(PyObject *o, long v) {
    if (PyLong_CheckExact(o)) {
        int of;
        long x = PyLong_AsLongAndOverflow(o, &of);
        return !of && x == v;
    }
    PyObject *c = PyLong_FromLong(v);
    if (!c) return -1;
    int r = PyObject_RichCompareBool(o, c, Py_EQ);
    Py_DECREF(c);
    return r;
}

static int attr_eq(PyObject *pkt, int name, long v) {
    PyObject *o = PyObject_GetAttr(pkt, attr[name]);
    if (!o) return -1;
    int r = eq_int(o, v);
    Py_DECREF(o);
    return r;
}

typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
    Py_buffer view;
    PyObject *obj;
} Bytes;

static int get_ip(PyObject *pkt, Bytes *b) {
    b->view.obj = NULL;
    b->obj = PyObject_GetAttr(pkt, attr[P_IP_PACKET]);
    if (!b->obj) return -1;
    if (PyBytes_Check(b->obj)) {
        b->p = (const unsigned char *)PyBytes_AS_STRING(b->obj);
        b->n = PyBytes_GET_SIZE(b->obj);
        return 0;
    }
    if (PyObject_GetBuffer(b->obj, &b->view, PyBUF_SIMPLE) < 0) {
        Py_CLEAR(b->obj);
        return -1;
    }
    b->p = b->view.buf;
    b->n = b->view.len;
    return 0;
}

static void release_ip(Bytes *b) {
    if (b->view.obj) PyBuffer_Release(&b->view);
    Py_XDECREF(b->obj);
}

/* `(ip[0] & 0x0F) * 4 if pkt.ip_version == 4 else other`; -2 on error. */
static Py_ssize_t ip_offset(PyObject *pkt, const Bytes *b, Py_ssize_t other) {
    int v4 = attr_eq(pkt, P_IP_VERSION, 4);
    if (v4 < 0) return -2;
    if (!v4) return other;
    if (b->n < 1) {
        PyErr_SetString(PyExc_IndexError, "index out of range");
        return -2;
    }
    return (b->p[0] & 0x0F) * 4;
}

/* The flag byte from NFStream's flag fields, with Python's own | and << (truncated packets only). */
static PyObject *fallback_flags(PyObject *pkt) {
    PyObject *acc = PyObject_GetAttr(pkt, attr[P_FIN]);
    for (int i = 1; acc && i < 8; i++) {
        PyObject *bit = PyObject_GetAttr(pkt, attr[P_FIN + i]);
        PyObject *shift = PyLong_FromLong(i); /* FIN, SYN, RST, PSH, ACK, URG, ECE, CWR: bits 0..7 */
        PyObject *term = bit && shift ? PyNumber_Lshift(bit, shift) : NULL;
        PyObject *next = term ? PyNumber_Or(acc, term) : NULL;
        Py_XDECREF(bit);
        Py_XDECREF(shift);
        Py_XDECREF(term);
        Py_SETREF(acc, next);
    }
    return acc;
}

/* A new 5-tuple that steals its items (all non-NULL). */
static PyObject *tuple5(PyObject *a, PyObject *b, PyObject *c, PyObject *d, PyObject *e) {
    PyObject *t = PyTuple_New(5);
    if (!t) {
        Py_DECREF(a), Py_DECREF(b), Py_DECREF(c), Py_DECREF(d), Py_DECREF(e);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, a);
    PyTuple_SET_ITEM(t, 1, b);
    PyTuple_SET_ITEM(t, 2, c);
    PyTuple_SET_ITEM(t, 3, d);
    PyTuple_SET_ITEM(t, 4, e);
    return t;
}

static PyObject *decode_tcp(PyObject *pkt) {
    Bytes b;
    if (get_ip(pkt, &b) < 0) return NULL;
    PyObject *flags = NULL, *window = NULL, *payload = NULL, *transport = NULL, *header = NULL, *out = NULL;
    Py_ssize_t off = ip_offset(pkt, &b, b.n > 6 && b.p[6] == 6 ? 40 : -1);
    if (off == -2) goto done;
    if (off >= 0 && b.n >= off + 16) {
        flags = PyLong_FromLong(b.p[off + 13]);
        window = PyLong_FromLong((long)b.p[off + 14] << 8 | b.p[off + 15]);
    } else {
        flags = fallback_flags(pkt);
        window = PyLong_FromLong(0);
    }
    if (!flags || !window) goto done;
    payload = PyObject_GetAttr(pkt, attr[P_PAYLOAD_SIZE]);
    transport = payload ? PyObject_GetAttr(pkt, attr[P_TRANSPORT_SIZE]) : NULL;
    header = transport ? PyNumber_Subtract(transport, payload) : NULL;
    if (header) {
        out = tuple5(payload, header, flags, window, Py_NewRef(Py_None));
        payload = header = flags = window = NULL;
    }
done:
    release_ip(&b);
    Py_XDECREF(flags);
    Py_XDECREF(window);
    Py_XDECREF(payload);
    Py_XDECREF(transport);
    Py_XDECREF(header);
    return out;
}

static PyObject *decode_icmp(PyObject *pkt) {
    Bytes b;
    if (get_ip(pkt, &b) < 0) return NULL;
    PyObject *icmp = NULL, *zero = PyLong_FromLong(0), *out = NULL;
    Py_ssize_t off = ip_offset(pkt, &b, 40);
    if (off == -2 || !zero) goto done;
    if (b.n >= off + 2)
        icmp = Py_BuildValue("(ii)", b.p[off], b.p[off + 1]);
    else
        icmp = Py_NewRef(Py_None);
    if (icmp) out = PyTuple_Pack(5, zero, zero, zero, zero, icmp);
done:
    release_ip(&b);
    Py_XDECREF(icmp);
    Py_XDECREF(zero);
    return out;
}

static PyObject *decode(PyObject *Py_UNUSED(module), PyObject *pkt) {
    PyObject *proto = PyObject_GetAttr(pkt, attr[P_PROTOCOL]);
    if (!proto) return NULL;
    PyObject *out = NULL;
    int r = eq_int(proto, 6);
    if (r > 0) {
        out = decode_tcp(pkt);
    } else if (r == 0 && (r = eq_int(proto, 17)) > 0) {
        PyObject *payload = PyObject_GetAttr(pkt, attr[P_PAYLOAD_SIZE]);
        if (payload)
            out = tuple5(payload, PyLong_FromLong(8), PyLong_FromLong(0), PyLong_FromLong(0), Py_NewRef(Py_None));
    } else if (r == 0) {
        int icmp = eq_int(proto, 1); /* proto in (1, 58) */
        if (icmp == 0) icmp = eq_int(proto, 58);
        if (icmp > 0)
            out = decode_icmp(pkt);
        else if (icmp == 0)
            out = tuple5(PyLong_FromLong(0), PyLong_FromLong(0), PyLong_FromLong(0), PyLong_FromLong(0),
                         Py_NewRef(Py_None));
    }
    Py_DECREF(proto);
    return out;
}


/* -- walk_pcap: capture/source.py's _scan_pcap loop over ordinary records ----------------------------------------
 * walk_pcap(buffer, off, end, big_endian, frac_per_ms, max_record, n, last_ms) -> (off, n, last_ms): from the record
 * at off, take every record that lies whole before end, is at most max_record long and has a timestamp with
 * neither word's top bit set, exactly as the Python loop does (ms = sec * 1000 + frac // frac_per_ms, the
 * latest kept); stop before the first other record, which the Python loop then reads with its messages. */
static PyObject *walk_pcap(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "walk_pcap(buffer, off, end, big_endian, frac_per_ms, max_record, n, last_ms)");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    long long off = PyLong_AsLongLong(args[1]), end = PyLong_AsLongLong(args[2]);
    int big = PyObject_IsTrue(args[3]);
    long long frac_per_ms = PyLong_AsLongLong(args[4]), max_record = PyLong_AsLongLong(args[5]);
    long long n = PyLong_AsLongLong(args[6]), last = PyLong_AsLongLong(args[7]);
    if (PyErr_Occurred() || big < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (end > view.len) end = view.len;
    if (off < 0 || frac_per_ms <= 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "walk_pcap: bad offset or fraction unit");
        return NULL;
    }
    const unsigned char *b = view.buf;
    while (off + 16 <= end) {
        const unsigned char *r = b + off;
        uint32_t w[3];
        for (int i = 0; i < 3; i++)
            w[i] = big ? (uint32_t)r[4 * i] << 24 | (uint32_t)r[4 * i + 1] << 16 | (uint32_t)r[4 * i + 2] << 8 | r[4 * i + 3]
                       : (uint32_t)r[4 * i + 3] << 24 | (uint32_t)r[4 * i + 2] << 16 | (uint32_t)r[4 * i + 1] << 8 | r[4 * i];
        uint32_t sec = w[0], frac = w[1], incl = w[2];
        if ((long long)incl > max_record || off + 16 + (long long)incl > end || ((sec | frac) >> 31)) break;
        long long ms = (long long)sec * 1000 + (long long)frac / frac_per_ms;
        if (ms > last) last = ms;
        off += 16 + (long long)incl;
        n++;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(LLL)", off, n, last);
}

static PyMethodDef module_methods[] = {
    {"walk_pcap", (PyCFunction)(void (*)(void))walk_pcap, METH_FASTCALL,
     "walk_pcap(buffer, off, end, big_endian, frac_per_ms, max_record, n, last_ms)\n--\n\n"
     "capture/source.py's pcap record walk over ordinary records, compiled: (off, n, last_ms)."},
    {"set_layout", (PyCFunction)(void (*)(void))set_layout, METH_FASTCALL,
     "set_layout(offsets, flag_bits)\n--\n\nNFStream's struct nf_packet as cffi describes it (see add_raw)."},
    {"decode", (PyCFunction)decode, METH_O,
     "decode(pkt)\n--\n\n(payload, header, flags, window, icmp) of an NFStream packet: "
     "tapwatch.capture.fastpath.py_decode, compiled."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tapwatch.capture._cicflow",
    .m_doc = "The compiled twin of tapwatch.capture.cicflow.CicFlow and fastpath.py_decode (see capture/_cicflow.c).",
    .m_size = -1,
    .m_methods = module_methods,
};

static const char *STATE_NAMES[N_STATE] = {
    "act_data_fwd", "act_max", "act_min", "act_n", "act_sq", "act_sum", "activity_timeout_us", "biat_max",
    "biat_min", "biat_sq", "bwd_first", "bwd_flags", "bwd_header", "bwd_last", "bwd_max", "bwd_min", "bwd_n",
    "bwd_sq", "bwd_sum", "carried_us", "end_active", "fiat_max", "fiat_min", "fiat_sq", "fwd_first", "fwd_flags",
    "fwd_header", "fwd_last", "fwd_max", "fwd_min", "fwd_n", "fwd_sq", "fwd_sum", "iat_max", "iat_min", "iat_sq",
    "icmp", "idl_max", "idl_min", "idl_n", "idl_sq", "idl_sum", "init_win_bwd", "init_win_fwd", "last_us",
    "min_seg_fwd", "protocol", "start_active", "start_us", "tcp_state",
};

static int intern_all(PyObject **out, const char **names, int n) {
    for (int i = 0; i < n; i++)
        if (!out[i] && !(out[i] = PyUnicode_InternFromString(names[i]))) return -1;
    return 0;
}

PyMODINIT_FUNC PyInit__cicflow(void) {
    if (intern_all(attr, ATTR_NAMES, N_ATTR) < 0 || intern_all(init_names, INIT_NAMES, N_INIT) < 0 ||
        intern_all(add_names, ADD_NAMES, 6) < 0 || PyType_Ready(&CicFlowType) < 0 ||
        (!inf && !(inf = PyFloat_FromDouble(Py_HUGE_VAL))) ||
        (!minus_inf && !(minus_inf = PyFloat_FromDouble(-Py_HUGE_VAL))))
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    PyObject *names = PyTuple_New(N_STATE);
    for (int i = 0; names && i < N_STATE; i++) {
        PyObject *s = PyUnicode_InternFromString(STATE_NAMES[i]);
        if (!s) Py_CLEAR(names);
        else PyTuple_SET_ITEM(names, i, s);
    }
    if (!names || PyModule_AddObject(m, "STATE_NAMES", names) < 0) {
        Py_XDECREF(names);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&CicFlowType);
    if (PyModule_AddObject(m, "CicFlow", (PyObject *)&CicFlowType) < 0) {
        Py_DECREF(&CicFlowType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
