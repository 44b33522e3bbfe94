/* Caller: one kernel's local call path (Calls.call in _calls.py, in C).
 *
 * A call runs eagerly: the handler is started inside kernel.call(), and most
 * handlers finish in that first step; the caller gets a Finished (an awaitable already done). A handler that
 * suspends is handed to Python (kernel._resume), which goes on driving it in
 * the awaiting task with the deadline armed. Anything unusual (remote target,
 * middleware, guard, per-method timeout, draining, an expired deadline) goes
 * to the Python call, and every error is mapped and counted by Python. */
#include "speedups.h"


static int
caller_traverse(CallerObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->routes);
    Py_VISIT(self->var);
    Py_VISIT(self->ctx_type);
    Py_VISIT(self->counter);
    Py_VISIT(self->empty_meta);
    Py_VISIT(self->fallback);
    Py_VISIT(self->resume);
    Py_VISIT(self->failed);
    Py_VISIT(self->emit_fallback);
    Py_VISIT(self->topics);
    Py_VISIT(self->append);
    Py_VISIT(self->queue);
    Py_VISIT(self->wake);
    Py_VISIT(self->listeners);
    Py_VISIT(self->emitted);
    return 0;
}

static int
caller_clear(CallerObject *self)
{
    Py_CLEAR(self->routes); /* first: org_caller_alive tests it alone */
    Py_CLEAR(self->var);
    Py_CLEAR(self->ctx_type);
    Py_CLEAR(self->counter);
    Py_CLEAR(self->empty_meta);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->resume);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->emit_fallback);
    Py_CLEAR(self->topics);
    Py_CLEAR(self->append);
    Py_CLEAR(self->queue);
    Py_CLEAR(self->wake);
    Py_CLEAR(self->listeners);
    Py_CLEAR(self->emitted);
    return 0;
}

static void
caller_dealloc(CallerObject *self)
{
    PyObject_GC_UnTrack(self);
    caller_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
caller_init(CallerObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"routes", "var", "ctx_type", "counter", "empty_meta",
                             "fallback", "resume", "failed", "timeout", NULL};
    PyObject *routes, *var, *ctx_type, *counter, *empty_meta, *fallback, *resume, *failed;
    double timeout;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OO!OOOOOd:Caller", kwlist, &PyDict_Type,
                                     &routes, &var, &PyType_Type, &ctx_type, &counter,
                                     &empty_meta, &fallback, &resume, &failed, &timeout)) {
        return -1;
    }
    if (!PyContextVar_CheckExact(var)) {
        PyErr_SetString(PyExc_TypeError, "var must be a contextvars.ContextVar");
        return -1;
    }
    if (!PyType_IsSubtype((PyTypeObject *)ctx_type, &ContextBase_Type)) {
        PyErr_SetString(PyExc_TypeError, "ctx_type must subclass ContextBase");
        return -1;
    }
    if (Py_TYPE(counter)->tp_iternext == NULL) {
        PyErr_SetString(PyExc_TypeError, "counter must be an iterator");
        return -1;
    }
    /* Set once: the hot paths read these fields borrowed (see speedups.h), which is
     * safe only if no second __init__ can free them under a running call. */
    if (self->routes != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a Caller is set up once");
        return -1;
    }
    self->routes = Py_NewRef(routes);
    self->var = Py_NewRef(var);
    self->ctx_type = (PyTypeObject *)Py_NewRef(ctx_type);
    self->counter = Py_NewRef(counter);
    self->empty_meta = Py_NewRef(empty_meta);
    self->fallback = Py_NewRef(fallback);
    self->resume = Py_NewRef(resume);
    self->failed = Py_NewRef(failed);
    self->timeout = timeout;
    self->enabled = 0;
    self->emit_enabled = 0;
    return 0;
}

/* Wire the event path: bind(emit_fallback, topics, queue, wake, max_pending, listeners, emitted). */
PyObject *
org_caller_bind_events(CallerObject *self, PyObject *args)
{
    PyObject *emit_fallback, *topics, *queue, *wake, *listeners, *emitted;
    Py_ssize_t max_pending;
    if (!PyArg_ParseTuple(args, "OO!OO!nO!O:bind_events", &emit_fallback, &PyDict_Type, &topics,
                          &queue, &PyList_Type, &wake, &max_pending, &PyList_Type,
                          &listeners, &emitted)) {
        return NULL;
    }
    if (PyList_GET_SIZE(wake) != 1) {
        PyErr_SetString(PyExc_ValueError, "wake must be a one-item list");
        return NULL;
    }
    if (self->emit_fallback != NULL) { /* set once, as in caller_init */
        PyErr_SetString(PyExc_RuntimeError, "a Caller's events are bound once");
        return NULL;
    }
    PyObject *append = PyObject_GetAttrString(queue, "append");
    if (append == NULL) {
        return NULL;
    }
    /* The arguments are borrowed from `args` (held by our caller) across the lookup above. */
    self->emit_fallback = Py_NewRef(emit_fallback);
    self->topics = Py_NewRef(topics);
    self->queue = Py_NewRef(queue);
    self->append = append;
    self->wake = Py_NewRef(wake);
    self->listeners = Py_NewRef(listeners);
    self->emitted = Py_NewRef(emitted);
    self->max_pending = max_pending;
    Py_RETURN_NONE;
}

/* The context of a call or event made now: a root one (``parent`` None) or the
 * child of ``parent`` (a ctx_type instance): a new id, the parent's id as its
 * cause, the root's as its correlation, principal and meta inherited. */
PyObject *
org_context_next(CallerObject *self, PyObject *parent, PyObject *deadline, PyObject *topic)
{
    /* Held before taking an id or allocating: either can run Python code (a Python
     * counter, a finalizer) that reassigns the parent's fields and frees the old ones. */
    PyObject *corr, *cause, *principal, *meta;
    if (parent == Py_None) {
        corr = Py_NewRef(Py_None);
        cause = Py_NewRef(Py_None);
        principal = Py_NewRef(Py_None);
        meta = Py_NewRef(self->empty_meta);
    }
    else {
        ContextObject *p = (ContextObject *)parent;
        cause = Py_NewRef(FIELD(p->seq));
        corr = Py_NewRef(p->corr == NULL || p->corr == Py_None ? cause : p->corr);
        principal = Py_NewRef(FIELD(p->principal));
        meta = Py_NewRef(FIELD(p->meta));
    }
    PyObject *seq = Py_TYPE(self->counter)->tp_iternext(self->counter);
    if (seq == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "the request id counter is exhausted");
        }
        Py_DECREF(corr);
        Py_DECREF(cause);
        Py_DECREF(principal);
        Py_DECREF(meta);
        return NULL;
    }
    return org_context_make(self->ctx_type, seq, Py_NewRef(deadline), corr, cause, principal,
                            meta, Py_NewRef(topic));
}

static PyObject *
fallback_call(CallerObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return PyObject_Vectorcall(self->fallback, args, nargs, kwnames);
}

/* The handler raised (or could not be called): let Python map and count the error,
 * then hand it to the awaiting caller. `started`: the coroutine existed. `errp`
 * (when not NULL) gets a new reference to the error, for the call's policy. */
static PyObject *
call_failed(CallerObject *self, PyObject *entry, int started, PyObject **errp)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    if (value == NULL) {
        return NULL;
    }
    PyObject *err = PyObject_CallFunction(self->failed, "OOi", entry, value, started);
    Py_DECREF(value);
    if (err == NULL) {
        return NULL;
    }
    if (errp != NULL) {
        *errp = Py_NewRef(err);
    }
    return org_finished_new(NULL, err);
}

/* Calls waiting in a bulkhead's queue; -1 when that cannot be read without
 * running Python code (not a built-in container): the Python path decides. */
static inline Py_ssize_t
bulkhead_waiting(BulkheadCoreObject *bh)
{
    PyObject *w = bh->waiters;
    if (w == NULL || (Py_TYPE(w)->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        return -1;
    }
    Py_ssize_t n = PyObject_Size(w); /* a deque's length: no Python code runs */
    if (n < 0) {
        PyErr_Clear();
    }
    return n;
}

/* The policy's part of a call (Guard.enter and Guard.leave, the common case in C). */
typedef struct {
    GuardCoreObject *guard;   /* held; NULL: no policy */
    BreakerCoreObject *breaker;   /* held, or NULL */
    BulkheadCoreObject *bulkhead; /* held, or NULL */
    int entered;              /* a slot is taken and the call not yet left */
} Admission;

/* Read and hold the guard's breaker and bulkhead (their setters checked the types). */
static void
admission_hold(Admission *a)
{
    PyObject *b = a->guard->breaker, *h = a->guard->bulkhead;
    if (b != NULL && b != Py_None) {
        a->breaker = (BreakerCoreObject *)Py_NewRef(b);
    }
    if (h != NULL && h != Py_None) {
        a->bulkhead = (BulkheadCoreObject *)Py_NewRef(h);
    }
}

/* Guard.enter without waiting, for a guard without a rate limit: 1 admitted (a
 * bulkhead slot taken), 0 the Python path decides (full, open, half-open).
 * Nothing here allocates or runs Python code between the checks and the take. */
static int
admission_enter(Admission *a)
{
    BulkheadCoreObject *bh = a->bulkhead;
    if (bh != NULL && (bulkhead_waiting(bh) != 0 || bh->active >= bh->limit)) {
        return 0;
    }
    if (a->breaker != NULL && a->breaker->state != org_str_closed) {
        return 0;
    }
    if (bh != NULL) {
        bh->active++;
    }
    a->entered = 1;
    return 1;
}

/* Guard.leave / Guard.left: `ok` a success; else `err` (NULL: abandoned, no outcome).
 * The common case (no one waiting, breaker still closed, a success) stays in C;
 * the rest is the Python Guard's. Keeps any exception that is set. */
static int
admission_leave(Admission *a, int ok, PyObject *err)
{
    if (!a->entered) {
        return 0;
    }
    a->entered = 0;
    BulkheadCoreObject *bh = a->bulkhead;
    BreakerCoreObject *br = a->breaker;
    if (ok && (bh == NULL || bulkhead_waiting(bh) == 0) &&
        (br == NULL || br->state == org_str_closed)) {
        if (bh != NULL) {
            bh->active--;
        }
        if (br != NULL) {
            br->consecutive = 0;
            org_breaker_push(br, 1);
        }
        return 0;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *res;
    if (ok) {
        res = PyObject_CallMethodOneArg((PyObject *)a->guard, org_str_leave, Py_None);
    }
    else {
        res = PyObject_CallMethodOneArg((PyObject *)a->guard, org_str_left, FIELD(err));
    }
    if (res == NULL) {
        if (type != NULL) { /* the error already on its way wins; this one is reported */
            PyErr_WriteUnraisable((PyObject *)a->guard);
            PyErr_Restore(type, value, tb);
        }
        return -1;
    }
    Py_DECREF(res);
    PyErr_Restore(type, value, tb);
    return 0;
}

static void
admission_release(Admission *a)
{
    Py_XDECREF(a->guard);
    Py_XDECREF(a->breaker);
    Py_XDECREF(a->bulkhead);
}

/* The route's policy can run on the C path: no access guard or per-method timeout,
 * and a guard without retries, fallback or rate limit. */
static inline int
route_policy_fast(RouteObject *r)
{
    PyObject *p = r->policy; /* a GuardCore or None: its setter checks */
    return r->inline_policy && p != NULL && p != Py_None && ((GuardCoreObject *)p)->fast;
}

/* The fields the call path needs are set (RpcEntry sets them all; Python may delete them). */
static inline int
route_complete(RouteObject *r)
{
    return r->fn != NULL && r->contract != NULL && r->checks != NULL &&
           (r->checks == Py_None || PyTuple_CheckExact(r->checks));
}

/* Build the handler's coroutine (validated when the route has a contract). The
 * caller holds `r`; its fields are read here, after everything since the lookup
 * that could run Python code, and those used across a call are held: the call
 * may reassign them (a finalizer, a validator) and free what they held. */
static PyObject *
start_handler(RouteObject *r, PyObject *const *values, PyObject *kwnames, int *bound)
{
    *bound = 0;
    if (!route_complete(r)) { /* emptied by Python code since the lookup */
        PyErr_SetString(PyExc_RuntimeError, "the route was changed while it was being called");
        return NULL;
    }
    PyObject *fn = r->fn, *contract = r->contract, *coro;
    if (contract == Py_None ||
        (r->checks != Py_None && org_route_exact(r->checks, r->nrequired, values, kwnames))) {
        *bound = contract != Py_None; /* a check passed: a TypeError is the handler's own */
        Py_INCREF(fn);
        coro = PyObject_Vectorcall(fn, values, 0, kwnames);
        Py_DECREF(fn);
        return coro;
    }
    /* Not plain simple types: msgspec converts (and explains what is wrong). */
    *bound = 1;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *params = PyDict_New();
    if (params == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        if (PyDict_SetItem(params, PyTuple_GET_ITEM(kwnames, i), values[i]) < 0) {
            Py_DECREF(params);
            return NULL;
        }
    }
    Py_INCREF(fn);
    Py_INCREF(contract);
    PyObject *args = PyObject_CallMethodOneArg(contract, org_str_validate, params);
    Py_DECREF(params);
    Py_DECREF(contract);
    if (args == NULL) {
        Py_DECREF(fn);
        return NULL;
    }
    if (PyTuple_Check(args)) {
        coro = PyObject_Call(fn, args, NULL);
    }
    else {
        coro = PyObject_Call(fn, org_empty_tuple, args);
    }
    Py_DECREF(args);
    Py_DECREF(fn);
    return coro;
}

PyObject *
org_caller_call(CallerObject *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (!org_caller_alive(self)) {
        return NULL;
    }
    if (nargs != 1 || !self->enabled || !PyUnicode_CheckExact(args[0])) {
        return fallback_call(self, args, nargs, kwnames);
    }
    PyObject *entry = PyDict_GetItemWithError(self->routes, args[0]);
    if (entry == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        return fallback_call(self, args, nargs, kwnames);
    }
    if (!PyObject_TypeCheck(entry, &RouteBase_Type) || !route_complete((RouteObject *)entry) ||
        (((RouteObject *)entry)->slow && !route_policy_fast((RouteObject *)entry))) {
        return fallback_call(self, args, nargs, kwnames);
    }
    /* Held from here: everything below can allocate, so run the GC, whose
     * finalizers (or the handler) may unroute it. */
    Py_INCREF(entry);
    RouteObject *r = (RouteObject *)entry;
    PyObject *out = NULL, *parent = NULL, *dl = NULL, *ctx = NULL, *token = NULL, *err = NULL;
    PyObject *coro, *result, *stats;
    int bound, ok = 0;
    Admission adm = {NULL, NULL, NULL, 0};
    if (r->slow) { /* a policy the C path runs (route_policy_fast): held with its parts */
        adm.guard = (GuardCoreObject *)Py_NewRef(r->policy);
        admission_hold(&adm);
    }

    if (PyContextVar_Get(self->var, Py_None, &parent) < 0) {
        goto done;
    }
    double now = monotonic();
    double deadline = now + self->timeout;
    if (parent != Py_None) {
        if (Py_TYPE(parent) != self->ctx_type) {
            goto slow;
        }
        PyObject *pd = FIELD(((ContextObject *)parent)->deadline); /* read before any allocation */
        if (PyFloat_CheckExact(pd)) {
            double d = PyFloat_AS_DOUBLE(pd);
            if (d < deadline) {
                if (d <= now) { /* expired: the Python path raises the timeout */
                    goto slow;
                }
                deadline = d;
            }
        }
        else if (pd != Py_None) {
            goto slow;
        }
    }
    if (adm.guard != NULL) {
        if (!admission_enter(&adm)) { /* full, open or half-open: the Python path decides */
            goto slow;
        }
        double timeout = adm.guard->timeout;
        if (timeout >= 0 && now + timeout < deadline) {
            deadline = now + timeout;
        }
    }
    dl = PyFloat_FromDouble(deadline);
    if (dl == NULL) {
        goto done;
    }
    ctx = org_context_next(self, parent, dl, Py_None);
    if (ctx == NULL) {
        goto done;
    }
    token = PyContextVar_Set(self->var, ctx);
    if (token == NULL) {
        goto done;
    }
    stats = r->stats; /* read now (metrics may have been turned on); held while counted */
    if (stats != NULL && stats != Py_None) {
        if (PyObject_TypeCheck(stats, &StatsBase_Type)) {
            ((StatsObject *)stats)->calls++; /* metrics on: one increment, no lookup, no Python */
        }
        else {
            Py_INCREF(stats);
            int rc = org_incr_attr(stats, org_str_calls);
            Py_DECREF(stats);
            if (rc < 0) {
                goto reset;
            }
        }
    }
    PyObject **errp = adm.guard != NULL ? &err : NULL;
    coro = start_handler(r, args + 1, kwnames, &bound);
    if (coro == NULL) {
        out = call_failed(self, entry, bound, errp);
        goto reset;
    }
    switch (PyIter_Send(coro, Py_None, &result)) {
    case PYGEN_RETURN:
        out = org_finished_new(result, NULL);
        ok = out != NULL;
        break;
    case PYGEN_NEXT: /* suspended: Python finishes it, in the awaiting task, with the deadline */
        out = PyObject_CallFunctionObjArgs(self->resume, coro, result, ctx, dl, entry,
                                           adm.guard != NULL ? (PyObject *)adm.guard : Py_None,
                                           NULL);
        Py_DECREF(result);
        if (out != NULL) {
            adm.entered = 0; /* Python's now: _finish leaves the guard */
        }
        break;
    default:
        out = call_failed(self, entry, 1, errp);
        break;
    }
    Py_DECREF(coro);
reset:
    if (PyContextVar_Reset(self->var, token) < 0) {
        Py_CLEAR(out);
    }
    /* After the reset, as Python leaves a guard: a success, the mapped error, or abandoned. */
    if (admission_leave(&adm, ok && out != NULL, err) < 0) {
        Py_CLEAR(out);
    }
done:
    admission_leave(&adm, 0, NULL); /* a slot taken by a call that never started */
    admission_release(&adm);
    Py_XDECREF(err);
    Py_XDECREF(token);
    Py_XDECREF(ctx);
    Py_XDECREF(dl);
    Py_XDECREF(parent);
    Py_DECREF(entry);
    return out;
slow:
    out = fallback_call(self, args, nargs, kwnames);
    goto done;
}

static PyMethodDef caller_methods[] = {
    {"call", (PyCFunction)(void (*)(void))org_caller_call, METH_FASTCALL | METH_KEYWORDS,
     "call(target, /, **params): the local hot path of Kernel.call."},
    {"emit", (PyCFunction)(void (*)(void))org_caller_emit, METH_FASTCALL | METH_KEYWORDS,
     "emit(topic, payload=None, *, meta=None): the local hot path of Kernel.emit."},
    {"deliver", (PyCFunction)(void (*)(void))org_caller_deliver, METH_FASTCALL,
     "deliver(subs, payload, ctx): run one event's handlers to their first suspension."},
    {"bind_events", (PyCFunction)org_caller_bind_events, METH_VARARGS,
     "bind_events(emit_fallback, topics, queue, wake, max_pending, listeners, emitted)."},
    {NULL},
};

static PyMemberDef caller_members[] = {
    {"enabled", T_BOOL, offsetof(CallerObject, enabled), 0, NULL},
    {"timeout", T_DOUBLE, offsetof(CallerObject, timeout), 0, NULL},
    {"emit_enabled", T_BOOL, offsetof(CallerObject, emit_enabled), 0, NULL},
    {"max_pending", T_PYSSIZET, offsetof(CallerObject, max_pending), 0, NULL},
    {NULL},
};

PyTypeObject Caller_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "organelle._speedups.Caller",
    .tp_basicsize = sizeof(CallerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One kernel's C call path (see Calls in organelle/_calls.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)caller_init,
    .tp_dealloc = (destructor)caller_dealloc,
    .tp_traverse = (traverseproc)caller_traverse,
    .tp_clear = (inquiry)caller_clear,
    .tp_methods = caller_methods,
    .tp_members = caller_members,
};

