/* Shared declarations of organelle._speedups (see module.c for the overview).
 *
 * Borrowed references: the rule
 *   Anything that allocates can run the GC, and the GC runs finalizers (__del__,
 *   a dropped coroutine's finally blocks): Python code that may unroute an RPC,
 *   clear the bus's topic cache, or reassign a Context's or a route's fields
 *   (all writable from Python), freeing what they held. So a borrowed reference
 *   is used only until the next call that can allocate or run Python code,
 *   unless its owner is one of these, which outlive the call we serve:
 *   - our arguments (our caller holds them; kwnames and values alike);
 *   - the items of a tuple we hold (tuples never change);
 *   - a Caller's own object fields: __init__ and bind_events set them once and
 *     refuse a second time, and the GC clears them only when the Caller is
 *     unreachable, never while one of its methods runs (org_caller_alive guards
 *     calls that arrive after that, from finalizers).
 *   Everything else (a dict lookup, a list item, a Context's or a route's field)
 *   becomes a strong reference before such a call, released on every exit path.
 *   A Context's or a route's field is read where it is used, after whatever
 *   could change it, and checked (Python may delete it: NULL in C); a borrowed
 *   pointer from an earlier read is never carried across such a call.
 *
 * Audit (every borrowed reference in _csrc/):
 *   fixed  call.c caller_call: the route entry (PyDict_GetItemWithError) was held
 *          only after org_context_next() and PyContextVar_Set(); a finalizer that
 *          unrouted it left a freed entry in use. Now held at once.
 *   fixed  call.c start_handler: the route's fn and contract were read before
 *          the allocations and used borrowed across the handler's creation and
 *          validation (Python code may reassign or delete them). Now read, and
 *          checked, when the handler starts, and held across those calls.
 *   fixed  call.c caller_call: route->stats is held while counted (its getattr
 *          and setattr can run Python code that resets the field).
 *   fixed  call.c org_context_next: the parent's seq, corr, principal and meta
 *          were read borrowed across the counter's next() and the allocation;
 *          now held first and handed to org_context_make, which steals them.
 *   fixed  events.c emit: the topic's subscriptions (from the cache dict) were
 *          held only after the queue's length and the context lookup; a deque
 *          subclass or a finalizer could drop them. Now held at once.
 *   fixed  events.c emit: the dispatcher's waker is read with a bounds check
 *          (PyList_GetItem; Python owns the list) and held before its slot is
 *          emptied.
 *   fixed  route.c org_route_exact: a non-str field name no longer leaves a
 *          TypeError set (PyUnicode_Compare); it takes the checks it reads, which
 *          neither allocates nor runs Python code, so they may be borrowed.
 *   fixed  call.c caller_init, bind_events: a second call swapped (and freed)
 *          fields that a running call reads borrowed; now refused.
 *   safe   call.c caller_call: the parent's deadline is read into a double
 *          before anything allocates; the parent itself is a new reference.
 *   safe   call.c start_handler: kwnames and values are our arguments; the
 *          checks tuple is read where nothing runs before org_route_exact is done.
 *   safe   events.c deliver: each sub is an item of the subs tuple (our
 *          argument); the handler is an item of the `fast` tuple, held across
 *          the call; every result is a new reference.
 *   safe   context.c context_new: PyArg_Parse* borrows from this call's own args
 *          and kwargs, which nothing else can reach.
 *   safe   call.c caller_call: the route's policy (a Guard) is held at once after
 *          the checks that read it; its breaker and bulkhead are held before
 *          anything allocates (admission_hold), and released on every exit.
 *          Their types are checked by their setters (policy.c), not per call.
 *   safe   call.c bulkhead_waiting: the wait queue is read borrowed for one
 *          length only, and only when its type is static (a deque: no Python code).
 *   safe   policy.c: a breaker's ring is read and written only inside one C call;
 *          a second __init__ replaces it while nothing holds a pointer into it.
 *   safe   finished.c: a Finished owns its value and error and hands them over; the
 *          exception's type is held by the exception being raised.
 *   safe   client.c client_vectorcall: a ClientCall's fields are set once (a second
 *          __init__ is refused) and cleared only when it is unreachable, so they
 *          are read borrowed, as a Caller's; the bound values are our arguments;
 *          a Finished's value is read and type-tested with nothing in between
 *          that allocates or runs Python code (a plain subtype test, never
 *          __instancecheck__), and the Finished is our own new reference.
 *   safe   client.c client_vectorcall: a call given in order lends our caller's
 *          args[-1] (PY_VECTORCALL_ARGUMENTS_OFFSET) to the target and restores
 *          it after the call, as CPython's method_vectorcall does; its `caller`
 *          (kernel.call's own Caller, called directly) is a field set once.
 *   safe   client.c client_base_getattro: the instance dict's str keys run no
 *          Python code; the value found is a new reference at once.
 *   safe   client.c client_repr: the __qualname__ read from the instance dict
 *          (writable from Python) is held before the repr is formatted.
 *   Tests: tests/test_speedups_refs.py frees what each fixed case used, from
 *   Python code run inside the C call, under `python -X dev` (freed memory is
 *   poisoned); every case crashed before these fixes. */
#ifndef ORGANELLE_SPEEDUPS_H
#define ORGANELLE_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define FIELD(x) ((x) != NULL ? (x) : Py_None)

/* Interned names and constants, made once by the module init. */
extern PyObject *org_str_calls;      /* "calls" */
extern PyObject *org_str_delivered;  /* "delivered" */
extern PyObject *org_str_stats;      /* "stats" */
extern PyObject *org_str_fast;       /* "fast" */
extern PyObject *org_str_set_result; /* "set_result" */
extern PyObject *org_str_validate;   /* "validate" */
extern PyObject *org_str_make_coro;  /* "make_coro" */
extern PyObject *org_int_one;        /* 1 */
extern PyObject *org_empty_tuple;    /* () */
extern PyObject *org_finished_none;
extern PyObject *org_str_closed;     /* "closed": a breaker's closed state (policy.c) */
extern PyObject *org_str_left;       /* "left": Guard.left(error) */
extern PyObject *org_str_leave;      /* "leave": Guard.leave(None) */      /* the shared Finished for "finished, returned None" */

/* time.monotonic(), without the call. */
static inline double
monotonic(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyTime_t t;
    (void)PyTime_MonotonicRaw(&t);
    return (double)t * 1e-9;
#else
    return _PyTime_AsSecondsDouble(_PyTime_GetMonotonicClock());
#endif
}

/* obj.<name> += 1 (the Python counters of CallStats / SubscriptionStats). */
static inline int
org_incr_attr(PyObject *obj, PyObject *name)
{
    PyObject *n = PyObject_GetAttr(obj, name);
    if (n == NULL) {
        return -1;
    }
    PyObject *more = PyNumber_Add(n, org_int_one);
    Py_DECREF(n);
    if (more == NULL) {
        return -1;
    }
    int rc = PyObject_SetAttr(obj, name, more);
    Py_DECREF(more);
    return rc;
}

/* context.c: the fields of organelle.Context. */
typedef struct {
    PyObject_HEAD
    PyObject *seq;
    PyObject *deadline;
    PyObject *corr;
    PyObject *cause;
    PyObject *principal;
    PyObject *meta;
    PyObject *topic;
} ContextObject;

extern PyTypeObject ContextBase_Type;
/* Steals all seven references. */
PyObject *org_context_make(PyTypeObject *type, PyObject *seq, PyObject *deadline, PyObject *corr,
                           PyObject *cause, PyObject *principal, PyObject *meta, PyObject *topic);

/* finished.c: an awaitable that already finished. */
typedef struct {
    PyObject_HEAD
    PyObject *value; /* the result; NULL once handed over or when failed */
    PyObject *error; /* the exception instance to raise, or NULL */
    int sticky;      /* the shared "finished with None": never used up */
} FinishedObject;

extern PyTypeObject Finished_Type;
PyObject *org_finished_new(PyObject *value, PyObject *error);

/* headers.c */
PyObject *org_header_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* ids.c: an envelope's UUIDv7 and time */
PyObject *org_uuid7(PyObject *module, PyObject *unused);
PyObject *org_utc_now(PyObject *module, PyObject *unused);
PyObject *org_utc_text(PyObject *module, PyObject *when);
PyObject *org_v5_text(PyObject *module, PyObject *digest);

/* route.c: the fields of an RPC route the call path reads. */
typedef struct {
    PyObject_HEAD
    PyObject *fn;       /* the bound handler */
    PyObject *contract; /* ParamsContract, or None when validation is off */
    PyObject *exact;    /* the generated pure-Python check (used by the Python path) */
    PyObject *stats;    /* CallStats or None */
    PyObject *checks;   /* ((name, type|None, nullable, required), ...) or None */
    /* All writable from Python: the call path holds what it reads (see above). */
    PyObject *target;   /* "module.method" */
    Py_ssize_t nrequired;
    char slow;          /* guard or per-method timeout: the Python path */
    PyObject *policy;   /* the Guard of calls naming no caller: a GuardCore, None or NULL */
    char inline_policy; /* no access guard or per-method timeout: a policy may run inline */
} RouteObject;

extern PyTypeObject RouteBase_Type;
int org_route_exact(PyObject *checks, Py_ssize_t nrequired, PyObject *const *values,
                    PyObject *kwnames);

/* route.c: the call counter of CallStats, bumped by the call path without a lookup. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t calls;
} StatsObject;

extern PyTypeObject StatsBase_Type;

/* policy.c: the state of breakers, bulkheads and guards (kernel/_policy.py subclasses them).
 * Every field is writable from Python; the call path holds a guard, its breaker
 * and its bulkhead while it uses them (see the rule above). */
typedef struct {
    PyObject_HEAD
    PyObject *state;        /* "closed" | "open" | "half_open" */
    Py_ssize_t consecutive; /* failures in a row */
    Py_ssize_t window;      /* the outcome window: a ring of `window` bytes (1: failed) */
    Py_ssize_t seen;        /* outcomes in it */
    Py_ssize_t bad;         /* failures in it */
    Py_ssize_t head;        /* where the next goes */
    char *ring;
} BreakerCoreObject;

typedef struct {
    PyObject_HEAD
    Py_ssize_t active;  /* calls holding a slot */
    Py_ssize_t limit;   /* max_concurrent */
    PyObject *waiters;  /* the wait queue (a deque of futures) */
} BulkheadCoreObject;

typedef struct {
    PyObject_HEAD
    PyObject *breaker;  /* BreakerCore, None or NULL (its setter checks the type) */
    PyObject *bulkhead; /* BulkheadCore, None or NULL (its setter checks the type) */
    double timeout;     /* the policy's timeout_s; < 0: none */
    char fast;          /* no retry, fallback or rate limit: the C path may run it */
} GuardCoreObject;

extern PyTypeObject BreakerCore_Type;
extern PyTypeObject BulkheadCore_Type;
extern PyTypeObject GuardCore_Type;
/* Set a route's policy: a GuardCore or None (checked here, not on each call). */
int org_set_policy(PyObject **field, PyObject *value);

/* One outcome into a breaker's window (as a deque with maxlen would keep it). */
static inline void
org_breaker_push(BreakerCoreObject *b, int ok)
{
    if (b->ring == NULL) {
        return; /* not initialised: nothing to keep */
    }
    if (b->seen == b->window) {
        b->bad -= b->ring[b->head];
    }
    else {
        b->seen++;
    }
    b->ring[b->head] = (char)!ok;
    b->bad += !ok;
    if (++b->head >= b->window) {
        b->head = 0;
    }
}

/* call.c and events.c: one kernel's hot paths. */
typedef struct {
    PyObject_HEAD
    PyObject *routes;    /* the kernel's target -> RpcEntry dict */
    PyObject *var;       /* the ContextVar holding the current Context */
    PyTypeObject *ctx_type; /* organelle.Context */
    PyObject *counter;   /* itertools.count shared with the Python path (request ids) */
    PyObject *empty_meta;
    PyObject *fallback;  /* the Python call: fallback(target, **params) */
    PyObject *resume;    /* resume(coro, first, ctx, deadline, entry) -> awaitable */
    PyObject *failed;    /* failed(entry, exc, started) -> exception to raise */
    PyObject *emit_fallback; /* the Python emit: emit_fallback(topic, payload, meta=...) */
    PyObject *topics;    /* the bus's topic -> subscriptions cache */
    PyObject *append;    /* the bus queue's append */
    PyObject *queue;     /* the bus queue (a deque) */
    PyObject *wake;      /* [future | None]: the idle dispatcher's waker */
    PyObject *listeners; /* the kernel's on_event listeners (shared, mutated in place) */
    PyObject *emitted;   /* emitted(topic, payload): tells them of an emit */
    Py_ssize_t max_pending;
    double timeout;      /* the default call timeout in seconds */
    char enabled;        /* accepting calls; no middleware, no on_call listeners */
    char emit_enabled;   /* accepting, no transport */
} CallerObject;

extern PyTypeObject Caller_Type;

/* client.c: one method of a typed client, bound and called in C; the clients' base. */
extern PyTypeObject ClientCall_Type;
extern PyTypeObject ClientBase_Type;
extern PyObject *org_str_missing;    /* "_organelle_missing": a client's missing attribute */

/* Every field the hot paths use is set: false before __init__ and after the GC
 * broke a cycle through the kernel (a coroutine closed during collection may
 * still call in). Raises RuntimeError instead of touching NULL. One test covers
 * all the fields: __init__ sets them together with no Python code in between,
 * and caller_clear clears `routes` first; they never change otherwise (set
 * once), so a running call may read them borrowed. */
static inline int
org_caller_alive(CallerObject *self)
{
    if (self->routes != NULL) {
        return 1;
    }
    PyErr_SetString(PyExc_RuntimeError, "this kernel's call path is not set up (or was torn down)");
    return 0;
}

PyObject *org_caller_bind_events(CallerObject *self, PyObject *args);
/* Caller.call (kernel.call): client.c calls it directly for kernel.call's own method. */
PyObject *org_caller_call(CallerObject *self, PyObject *const *args, Py_ssize_t nargsf,
                          PyObject *kwnames);
PyObject *org_context_next(CallerObject *self, PyObject *parent, PyObject *deadline,
                           PyObject *topic);
PyObject *org_caller_emit(CallerObject *self, PyObject *const *args, Py_ssize_t nargsf,
                          PyObject *kwnames);
PyObject *org_caller_deliver(CallerObject *self, PyObject *const *args, Py_ssize_t nargs);

#endif
