/* Caller: one kernel's local call path (Calls.call in _calls.py, in C).
 *
 * A call runs eagerly: the handler is started inside kernel.call(), and most
 * handlers finish in that first step; the caller gets a Done. A handler that
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
    Py_CLEAR(self->routes);
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
    Py_XSETREF(self->routes, Py_NewRef(routes));
    Py_XSETREF(self->var, Py_NewRef(var));
    Py_XSETREF(self->ctx_type, (PyTypeObject *)Py_NewRef(ctx_type));
    Py_XSETREF(self->counter, Py_NewRef(counter));
    Py_XSETREF(self->empty_meta, Py_NewRef(empty_meta));
    Py_XSETREF(self->fallback, Py_NewRef(fallback));
    Py_XSETREF(self->resume, Py_NewRef(resume));
    Py_XSETREF(self->failed, Py_NewRef(failed));
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
                          &queue, &PyList_Type, &wake, &max_pending, &PyList_Type, &listeners,
                          &emitted)) {
        return NULL;
    }
    if (PyList_GET_SIZE(wake) != 1) {
        PyErr_SetString(PyExc_ValueError, "wake must be a one-item list");
        return NULL;
    }
    PyObject *append = PyObject_GetAttrString(queue, "append");
    if (append == NULL) {
        return NULL;
    }
    Py_XSETREF(self->emit_fallback, Py_NewRef(emit_fallback));
    Py_XSETREF(self->topics, Py_NewRef(topics));
    Py_XSETREF(self->queue, Py_NewRef(queue));
    Py_XSETREF(self->append, append);
    Py_XSETREF(self->wake, Py_NewRef(wake));
    Py_XSETREF(self->listeners, Py_NewRef(listeners));
    Py_XSETREF(self->emitted, Py_NewRef(emitted));
    self->max_pending = max_pending;
    Py_RETURN_NONE;
}

/* The context of a call or event made now: a root one (``parent`` None) or the
 * child of ``parent`` (a ctx_type instance): a new id, the parent's id as its
 * cause, the root's as its correlation, principal and meta inherited. */
PyObject *
org_context_next(CallerObject *self, PyObject *parent, PyObject *deadline, PyObject *topic)
{
    PyObject *corr = Py_None, *cause = Py_None, *principal = Py_None;
    PyObject *meta = self->empty_meta;
    if (parent != Py_None) {
        ContextObject *p = (ContextObject *)parent;
        cause = FIELD(p->seq);
        corr = p->corr == NULL || p->corr == Py_None ? cause : p->corr;
        principal = FIELD(p->principal);
        meta = FIELD(p->meta);
    }
    PyObject *seq = Py_TYPE(self->counter)->tp_iternext(self->counter);
    if (seq == NULL) {
        return NULL;
    }
    PyObject *ctx =
        org_context_make(self->ctx_type, seq, deadline, corr, cause, principal, meta, topic);
    Py_DECREF(seq);
    return ctx;
}

static PyObject *
fallback_call(CallerObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return PyObject_Vectorcall(self->fallback, args, nargs, kwnames);
}

/* The handler raised (or could not be called): let Python map and count the error,
 * then hand it to the awaiting caller. `started`: the coroutine existed. */
static PyObject *
call_failed(CallerObject *self, PyObject *entry, int started)
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
    return org_done_new(NULL, err);
}

/* Build the handler's coroutine (validated when the route has a contract). */
static PyObject *
start_handler(RouteObject *r, PyObject *const *values, PyObject *kwnames, int *bound)
{
    *bound = 0;
    if (r->contract == Py_None || (r->checks != Py_None && org_route_exact(r, values, kwnames))) {
        *bound = r->contract != Py_None; /* a check passed: a TypeError is the handler's own */
        return PyObject_Vectorcall(r->fn, values, 0, kwnames);
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
    PyObject *args = PyObject_CallMethod(r->contract, "validate", "O", params);
    Py_DECREF(params);
    if (args == NULL) {
        return NULL;
    }
    PyObject *coro;
    if (PyTuple_Check(args)) {
        coro = PyObject_Call(r->fn, args, NULL);
    }
    else {
        coro = PyObject_Call(r->fn, org_empty_tuple, args);
    }
    Py_DECREF(args);
    return coro;
}

static PyObject *
caller_call(CallerObject *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
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
    if (!PyObject_TypeCheck(entry, &RouteBase_Type) || ((RouteObject *)entry)->slow) {
        return fallback_call(self, args, nargs, kwnames);
    }
    RouteObject *r = (RouteObject *)entry;
    if (r->fn == NULL || r->contract == NULL || r->checks == NULL) {
        return fallback_call(self, args, nargs, kwnames); /* not a complete route */
    }

    PyObject *parent;
    if (PyContextVar_Get(self->var, Py_None, &parent) < 0) {
        return NULL;
    }
    double now = monotonic();
    double deadline = now + self->timeout;
    if (parent != Py_None) {
        if (Py_TYPE(parent) != self->ctx_type) {
            Py_DECREF(parent);
            return fallback_call(self, args, nargs, kwnames);
        }
        PyObject *pd = FIELD(((ContextObject *)parent)->deadline);
        if (PyFloat_CheckExact(pd)) {
            double d = PyFloat_AS_DOUBLE(pd);
            if (d < deadline) {
                if (d <= now) { /* expired: the Python path raises the timeout */
                    Py_DECREF(parent);
                    return fallback_call(self, args, nargs, kwnames);
                }
                deadline = d;
            }
        }
        else if (pd != Py_None) {
            Py_DECREF(parent);
            return fallback_call(self, args, nargs, kwnames);
        }
    }
    PyObject *dl = PyFloat_FromDouble(deadline);
    if (dl == NULL) {
        Py_DECREF(parent);
        return NULL;
    }
    PyObject *ctx = org_context_next(self, parent, dl, Py_None);
    Py_DECREF(parent);
    if (ctx == NULL) {
        Py_DECREF(dl);
        return NULL;
    }

    PyObject *token = PyContextVar_Set(self->var, ctx);
    if (token == NULL) {
        Py_DECREF(dl);
        Py_DECREF(ctx);
        return NULL;
    }
    Py_INCREF(entry); /* the handler may unroute it while it runs */
    PyObject *out = NULL;
    PyObject *stats = r->stats;
    if (stats != NULL && stats != Py_None) {
        if (PyObject_TypeCheck(stats, &StatsBase_Type)) {
            ((StatsObject *)stats)->calls++; /* metrics on: one increment, no lookup */
        }
        else if (org_incr_attr(stats, org_str_calls) < 0) {
            goto done;
        }
    }
    int bound;
    PyObject *coro = start_handler(r, args + 1, kwnames, &bound);
    if (coro == NULL) {
        out = call_failed(self, entry, bound);
        goto done;
    }
    PyObject *result;
    switch (PyIter_Send(coro, Py_None, &result)) {
    case PYGEN_RETURN:
        out = org_done_new(result, NULL);
        break;
    case PYGEN_NEXT: /* suspended: Python finishes it, in the awaiting task, with the deadline */
        out = PyObject_CallFunctionObjArgs(self->resume, coro, result, ctx, dl, entry, NULL);
        Py_DECREF(result);
        break;
    default:
        out = call_failed(self, entry, 1);
        break;
    }
    Py_DECREF(coro);
done:
    if (PyContextVar_Reset(self->var, token) < 0) {
        Py_CLEAR(out);
    }
    Py_DECREF(token);
    Py_DECREF(dl);
    Py_DECREF(ctx);
    Py_DECREF(entry);
    return out;
}

static PyMethodDef caller_methods[] = {
    {"call", (PyCFunction)(void (*)(void))caller_call, METH_FASTCALL | METH_KEYWORDS,
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

