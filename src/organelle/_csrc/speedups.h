/* Shared declarations of organelle._speedups (see module.c for the overview). */
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
extern PyObject *org_int_one;        /* 1 */
extern PyObject *org_empty_tuple;    /* () */
extern PyObject *org_done_none;      /* the shared Done for "finished, returned None" */

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
PyObject *org_context_make(PyTypeObject *type, PyObject *seq, PyObject *deadline, PyObject *corr,
                           PyObject *cause, PyObject *principal, PyObject *meta, PyObject *topic);

/* done.c: an awaitable that already finished. */
typedef struct {
    PyObject_HEAD
    PyObject *value; /* the result; NULL once handed over or when failed */
    PyObject *error; /* the exception instance to raise, or NULL */
    int sticky;      /* the shared "finished with None": never used up */
} DoneObject;

extern PyTypeObject Done_Type;
PyObject *org_done_new(PyObject *value, PyObject *error);

/* route.c: the fields of an RPC route the call path reads. */
typedef struct {
    PyObject_HEAD
    PyObject *fn;       /* the bound handler */
    PyObject *contract; /* ParamsContract, or None when validation is off */
    PyObject *exact;    /* the generated pure-Python check (used by the Python path) */
    PyObject *stats;    /* CallStats or None */
    PyObject *checks;   /* ((name, type|None, nullable, required), ...) or None */
    PyObject *target;   /* "module.method" */
    Py_ssize_t nrequired;
    char slow;          /* guard or per-method timeout: the Python path */
} RouteObject;

extern PyTypeObject RouteBase_Type;
int org_route_exact(RouteObject *r, PyObject *const *values, PyObject *kwnames);

/* route.c: the call counter of CallStats, bumped by the call path without a lookup. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t calls;
} StatsObject;

extern PyTypeObject StatsBase_Type;

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

/* Every field the hot paths use is set: false before __init__ and after the GC
 * broke a cycle through the kernel (a coroutine closed during collection may
 * still call in). Raises RuntimeError instead of touching NULL. */
static inline int
org_caller_alive(CallerObject *self)
{
    if (self->routes != NULL && self->var != NULL && self->ctx_type != NULL &&
        self->counter != NULL && self->empty_meta != NULL && self->fallback != NULL &&
        self->resume != NULL && self->failed != NULL) {
        return 1;
    }
    PyErr_SetString(PyExc_RuntimeError, "this kernel's call path is not set up (or was torn down)");
    return 0;
}
PyObject *org_caller_bind_events(CallerObject *self, PyObject *args);
PyObject *org_context_next(CallerObject *self, PyObject *parent, PyObject *deadline,
                           PyObject *topic);
PyObject *org_caller_emit(CallerObject *self, PyObject *const *args, Py_ssize_t nargsf,
                          PyObject *kwnames);
PyObject *org_caller_deliver(CallerObject *self, PyObject *const *args, Py_ssize_t nargs);

#endif
