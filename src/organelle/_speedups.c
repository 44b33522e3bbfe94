/* The local dispatch hot path in C: kernel.call and the request context.
 *
 * Optional: organelle runs the same logic in pure Python when this module is
 * absent (no compiler) or disabled (ORGANELLE_PURE=1). Everything here mirrors
 * Calls.call in _calls.py; anything unusual (remote target, middleware, guard,
 * per-method timeout, draining, an expired deadline) is handed back to that
 * Python code, so this file only has to be right about the common case.
 *
 * A call runs eagerly: the handler is started here, inside kernel.call(), and
 * most handlers finish in that first step. The caller then gets a `Done`, a
 * tiny awaitable that hands over the result (or raises the error) through
 * am_send, so neither a coroutine frame nor a StopIteration is paid for. A
 * handler that suspends is handed to Python (kernel._resume), which goes on
 * driving it in the awaiting task with the deadline armed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#ifndef ORGANELLE_SOURCE_HASH
#define ORGANELLE_SOURCE_HASH "unknown"
#endif

#define FIELD(x) ((x) != NULL ? (x) : Py_None)

static PyObject *str_calls;   /* "calls" */
static PyObject *str_delivered; /* "delivered" */
static PyObject *str_stats;   /* "stats" */
static PyObject *str_fast;    /* "fast" */
static PyObject *str_set_result; /* "set_result" */
static PyObject *done_none;   /* the shared Done for "finished, returned None" */
static PyObject *int_one;     /* 1 */
static PyObject *empty_tuple; /* () */

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

/* ---------------------------------------------------------------- Context */

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

static PyTypeObject ContextBase_Type;

/* Steals nothing; every argument is a borrowed reference (meta NULL: a new dict). */
static PyObject *
context_make(PyTypeObject *type, PyObject *seq, PyObject *deadline, PyObject *corr,
             PyObject *cause, PyObject *principal, PyObject *meta, PyObject *topic)
{
    ContextObject *self = (ContextObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    if (meta == NULL) {
        meta = PyDict_New();
        if (meta == NULL) {
            Py_DECREF(self);
            return NULL;
        }
    }
    else {
        Py_INCREF(meta);
    }
    self->seq = Py_NewRef(seq);
    self->deadline = Py_NewRef(deadline);
    self->corr = Py_NewRef(corr);
    self->cause = Py_NewRef(cause);
    self->principal = Py_NewRef(principal);
    self->meta = meta;
    self->topic = Py_NewRef(topic);
    return (PyObject *)self;
}

static PyObject *
context_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"seq", "deadline", "corr", "cause", "principal", "meta", "topic", NULL};
    PyObject *seq, *deadline = Py_None, *corr = Py_None, *cause = Py_None;
    PyObject *principal = Py_None, *meta = NULL, *topic = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OOOOOO:Context", kwlist, &seq, &deadline,
                                     &corr, &cause, &principal, &meta, &topic)) {
        return NULL;
    }
    return context_make(type, seq, deadline, corr, cause, principal, meta, topic);
}

static void
context_dealloc(ContextObject *self)
{
    Py_XDECREF(self->seq);
    Py_XDECREF(self->deadline);
    Py_XDECREF(self->corr);
    Py_XDECREF(self->cause);
    Py_XDECREF(self->principal);
    Py_XDECREF(self->meta);
    Py_XDECREF(self->topic);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef context_members[] = {
    {"seq", T_OBJECT_EX, offsetof(ContextObject, seq), 0, NULL},
    {"deadline", T_OBJECT_EX, offsetof(ContextObject, deadline), 0, NULL},
    {"corr", T_OBJECT_EX, offsetof(ContextObject, corr), 0, NULL},
    {"cause", T_OBJECT_EX, offsetof(ContextObject, cause), 0, NULL},
    {"principal", T_OBJECT_EX, offsetof(ContextObject, principal), 0, NULL},
    {"meta", T_OBJECT_EX, offsetof(ContextObject, meta), 0, NULL},
    {"topic", T_OBJECT_EX, offsetof(ContextObject, topic), 0, NULL},
    {NULL},
};

static PyTypeObject ContextBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "organelle._speedups.ContextBase",
    .tp_basicsize = sizeof(ContextObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Fields of organelle.Context, stored in C (not tracked by the GC).",
    .tp_new = context_new,
    .tp_dealloc = (destructor)context_dealloc,
    .tp_members = context_members,
};

/* ------------------------------------------------------------------- Done */

/* An awaitable that is already finished: `await` gives `value`, or raises `error`.
 * It is also a collections.abc.Coroutine (send/throw/close), so create_task,
 * gather and wait_for take it as they take the coroutine of a Python call. */
typedef struct {
    PyObject_HEAD
    PyObject *value; /* the result; NULL once handed over or when failed */
    PyObject *error; /* the exception instance to raise, or NULL */
    int sticky;      /* the shared "finished with None": never used up */
} DoneObject;

static PyTypeObject Done_Type;

static PyObject *
done_new(PyObject *value, PyObject *error)
{
    /* Steals both references. */
    DoneObject *self = PyObject_GC_New(DoneObject, &Done_Type);
    if (self == NULL) {
        Py_XDECREF(value);
        Py_XDECREF(error);
        return NULL;
    }
    self->value = value;
    self->error = error;
    self->sticky = 0;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static int
done_traverse(DoneObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->value);
    Py_VISIT(self->error);
    return 0;
}

static int
done_clear(DoneObject *self)
{
    Py_CLEAR(self->value);
    Py_CLEAR(self->error);
    return 0;
}

static void
done_dealloc(DoneObject *self)
{
    PyObject_GC_UnTrack(self);
    done_clear(self);
    PyObject_GC_Del(self);
}

static PySendResult
done_am_send(DoneObject *self, PyObject *arg, PyObject **result)
{
    (void)arg;
    if (self->error != NULL) {
        PyObject *error = self->error;
        self->error = NULL;
        PyErr_SetObject((PyObject *)Py_TYPE(error), error);
        Py_DECREF(error);
        *result = NULL;
        return PYGEN_ERROR;
    }
    if (self->value == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited call");
        *result = NULL;
        return PYGEN_ERROR;
    }
    *result = self->value;
    if (self->sticky) {
        Py_INCREF(self->value);
    }
    else {
        self->value = NULL;
    }
    return PYGEN_RETURN;
}

static PyObject *
done_await(PyObject *self)
{
    return Py_NewRef(self);
}

/* The slow protocol (iter/send): raise StopIteration(value) as a generator would. */
static PyObject *
done_iternext(DoneObject *self)
{
    PyObject *result;
    if (done_am_send(self, Py_None, &result) == PYGEN_ERROR) {
        return NULL;
    }
    PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, result);
    Py_DECREF(result);
    if (stop != NULL) {
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
    }
    return NULL;
}

static PyObject *
done_send(DoneObject *self, PyObject *arg)
{
    (void)arg;
    return done_iternext(self);
}

static PyObject *
done_throw(DoneObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* Nothing is running to catch it: drop our value and raise what was thrown. */
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
        return NULL;
    }
    if (!self->sticky) {
        Py_CLEAR(self->value);
        Py_CLEAR(self->error);
    }
    PyObject *typ = args[0];
    if (PyExceptionInstance_Check(typ)) {
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    }
    else if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, nargs > 1 ? args[1] : NULL);
    }
    else {
        PyErr_SetString(PyExc_TypeError, "exceptions must be classes or instances deriving from BaseException");
    }
    return NULL;
}

static PyObject *
done_close(DoneObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->sticky) {
        Py_RETURN_NONE;
    }
    done_clear(self);
    Py_RETURN_NONE;
}

static PyMethodDef done_methods[] = {
    {"send", (PyCFunction)done_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))done_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)done_close, METH_NOARGS, NULL},
    {NULL},
};

static PyAsyncMethods done_as_async = {
    .am_await = done_await,
    .am_send = (sendfunc)done_am_send,
};

static PyTypeObject Done_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "organelle._speedups.Done",
    .tp_basicsize = sizeof(DoneObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A local call that already finished; await it for the result.",
    .tp_dealloc = (destructor)done_dealloc,
    .tp_traverse = (traverseproc)done_traverse,
    .tp_clear = (inquiry)done_clear,
    .tp_as_async = &done_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)done_iternext,
    .tp_methods = done_methods,
};

/* ------------------------------------------------------------------ Route */

/* The fields of RpcEntry that the hot path reads (RpcEntry subclasses this). */
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

static int
route_traverse(RouteObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fn);
    Py_VISIT(self->contract);
    Py_VISIT(self->exact);
    Py_VISIT(self->stats);
    Py_VISIT(self->checks);
    Py_VISIT(self->target);
    return 0;
}

static int
route_clear(RouteObject *self)
{
    Py_CLEAR(self->fn);
    Py_CLEAR(self->contract);
    Py_CLEAR(self->exact);
    Py_CLEAR(self->stats);
    Py_CLEAR(self->checks);
    Py_CLEAR(self->target);
    return 0;
}

static void
route_dealloc(RouteObject *self)
{
    PyObject_GC_UnTrack(self);
    route_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef route_members[] = {
    {"fn", T_OBJECT, offsetof(RouteObject, fn), 0, NULL},
    {"contract", T_OBJECT, offsetof(RouteObject, contract), 0, NULL},
    {"exact", T_OBJECT, offsetof(RouteObject, exact), 0, NULL},
    {"stats", T_OBJECT, offsetof(RouteObject, stats), 0, NULL},
    {"checks", T_OBJECT, offsetof(RouteObject, checks), 0, NULL},
    {"target", T_OBJECT, offsetof(RouteObject, target), 0, NULL},
    {"nrequired", T_PYSSIZET, offsetof(RouteObject, nrequired), 0, NULL},
    {"slow", T_BOOL, offsetof(RouteObject, slow), 0, NULL},
    {NULL},
};

static PyTypeObject RouteBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "organelle._speedups.RouteBase",
    .tp_basicsize = sizeof(RouteObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The fields of an RPC route that the C call path reads.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)route_dealloc,
    .tp_traverse = (traverseproc)route_traverse,
    .tp_clear = (inquiry)route_clear,
    .tp_members = route_members,
};

/* Do the keyword values already have exactly the declared simple types? */
static int
route_exact(RouteObject *r, PyObject *const *values, PyObject *kwnames)
{
    PyObject *checks = r->checks;
    Py_ssize_t nfields = PyTuple_GET_SIZE(checks);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    Py_ssize_t required = 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        PyObject *field = NULL;
        for (Py_ssize_t j = 0; j < nfields; j++) {
            PyObject *f = PyTuple_GET_ITEM(checks, j);
            if (PyTuple_GET_ITEM(f, 0) == name) {
                field = f;
                break;
            }
        }
        if (field == NULL) { /* not interned alike: compare by value */
            for (Py_ssize_t j = 0; j < nfields; j++) {
                PyObject *f = PyTuple_GET_ITEM(checks, j);
                if (PyUnicode_Compare(PyTuple_GET_ITEM(f, 0), name) == 0) {
                    field = f;
                    break;
                }
            }
            if (field == NULL) {
                PyErr_Clear();
                return 0; /* unknown parameter: the Python path explains it */
            }
        }
        PyObject *type = PyTuple_GET_ITEM(field, 1);
        PyObject *value = values[i];
        if (type != Py_None && (PyObject *)Py_TYPE(value) != type &&
            !(value == Py_None && PyTuple_GET_ITEM(field, 2) == Py_True)) {
            return 0;
        }
        if (PyTuple_GET_ITEM(field, 3) == Py_True) {
            required++;
        }
    }
    return required == r->nrequired;
}

/* ----------------------------------------------------------------- Caller */

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
    Py_ssize_t max_pending;
    double timeout;      /* the default call timeout in seconds */
    char enabled;        /* accepting calls and no middleware */
    char emit_enabled;   /* accepting, no taps, no transport */
} CallerObject;

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

/* Wire the event path: bind(emit_fallback, topics, queue, wake, max_pending). */
static PyObject *
caller_bind_events(CallerObject *self, PyObject *args)
{
    PyObject *emit_fallback, *topics, *queue, *wake;
    Py_ssize_t max_pending;
    if (!PyArg_ParseTuple(args, "OO!OO!n:bind_events", &emit_fallback, &PyDict_Type, &topics,
                          &queue, &PyList_Type, &wake, &max_pending)) {
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
    self->max_pending = max_pending;
    Py_RETURN_NONE;
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
    return done_new(NULL, err);
}

static int
count_call(PyObject *stats)
{
    PyObject *calls = PyObject_GetAttr(stats, str_calls);
    if (calls == NULL) {
        return -1;
    }
    PyObject *more = PyNumber_Add(calls, int_one);
    Py_DECREF(calls);
    if (more == NULL) {
        return -1;
    }
    int rc = PyObject_SetAttr(stats, str_calls, more);
    Py_DECREF(more);
    return rc;
}

/* Build the handler's coroutine (validated when the route has a contract). */
static PyObject *
start_handler(RouteObject *r, PyObject *const *values, PyObject *kwnames, int *bound)
{
    *bound = 0;
    if (r->contract == Py_None || (r->checks != Py_None && route_exact(r, values, kwnames))) {
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
        coro = PyObject_Call(r->fn, empty_tuple, args);
    }
    Py_DECREF(args);
    return coro;
}

static PyObject *
caller_call(CallerObject *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
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

    PyObject *parent;
    if (PyContextVar_Get(self->var, Py_None, &parent) < 0) {
        return NULL;
    }
    double now = monotonic();
    double deadline = now + self->timeout;
    PyObject *seq, *corr, *cause, *principal, *meta;
    if (parent == Py_None) {
        corr = cause = principal = Py_None;
        meta = self->empty_meta;
    }
    else if (Py_TYPE(parent) == self->ctx_type) {
        ContextObject *p = (ContextObject *)parent;
        PyObject *pd = FIELD(p->deadline);
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
        cause = FIELD(p->seq);
        corr = p->corr == NULL || p->corr == Py_None ? cause : p->corr;
        principal = FIELD(p->principal);
        meta = FIELD(p->meta);
    }
    else {
        Py_DECREF(parent);
        return fallback_call(self, args, nargs, kwnames);
    }
    seq = Py_TYPE(self->counter)->tp_iternext(self->counter);
    if (seq == NULL) {
        Py_DECREF(parent);
        return NULL;
    }
    PyObject *dl = PyFloat_FromDouble(deadline);
    if (dl == NULL) {
        Py_DECREF(seq);
        Py_DECREF(parent);
        return NULL;
    }
    PyObject *ctx = context_make(self->ctx_type, seq, dl, corr, cause, principal, meta, Py_None);
    Py_DECREF(seq);
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
    PyObject *out = NULL;
    if (r->stats != NULL && r->stats != Py_None && count_call(r->stats) < 0) {
        goto done;
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
        out = done_new(result, NULL);
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
    return out;
}

/* The local hot path of Kernel.emit: queue (subs, payload, ctx) and wake the dispatcher. */
static PyObject *
caller_emit(CallerObject *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (!self->emit_enabled || self->topics == NULL || nargs < 1 || nargs > 2 ||
        (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0) || !PyUnicode_CheckExact(args[0])) {
        goto fallback;
    }
    PyObject *topic = args[0];
    PyObject *payload = nargs == 2 ? args[1] : Py_None;
    PyObject *subs = PyDict_GetItemWithError(self->topics, topic);
    if (subs == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        goto fallback; /* not routed yet: Python checks the topic and caches its route */
    }
    if (!PyTuple_CheckExact(subs)) {
        goto fallback;
    }
    if (PyTuple_GET_SIZE(subs) == 0) {
        return Py_NewRef(done_none);
    }
    Py_ssize_t queued = PyObject_Length(self->queue);
    if (queued < 0) {
        return NULL;
    }
    if (queued >= self->max_pending) {
        goto fallback; /* full: Python waits for room */
    }
    PyObject *parent;
    if (PyContextVar_Get(self->var, Py_None, &parent) < 0) {
        return NULL;
    }
    PyObject *corr, *cause, *principal, *meta;
    if (parent == Py_None) {
        corr = cause = principal = Py_None;
        meta = self->empty_meta;
    }
    else if (Py_TYPE(parent) == self->ctx_type) {
        ContextObject *p = (ContextObject *)parent;
        cause = FIELD(p->seq);
        corr = p->corr == NULL || p->corr == Py_None ? cause : p->corr;
        principal = FIELD(p->principal);
        meta = FIELD(p->meta);
    }
    else {
        Py_DECREF(parent);
        goto fallback;
    }
    PyObject *seq = Py_TYPE(self->counter)->tp_iternext(self->counter);
    if (seq == NULL) {
        Py_DECREF(parent);
        return NULL;
    }
    PyObject *ctx = context_make(self->ctx_type, seq, Py_None, corr, cause, principal, meta, topic);
    Py_DECREF(seq);
    Py_DECREF(parent);
    if (ctx == NULL) {
        return NULL;
    }
    PyObject *item = PyTuple_Pack(3, subs, payload, ctx);
    Py_DECREF(ctx);
    if (item == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_CallOneArg(self->append, item);
    Py_DECREF(item);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    PyObject *waker = PyList_GET_ITEM(self->wake, 0);
    if (waker != Py_None) {
        Py_INCREF(waker);
        PyList_SetItem(self->wake, 0, Py_NewRef(Py_None));
        r = PyObject_CallMethodOneArg(waker, str_set_result, Py_None);
        Py_DECREF(waker);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    }
    return Py_NewRef(done_none);
fallback:
    if (self->emit_fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "emit is not bound to an event bus");
        return NULL;
    }
    return PyObject_Vectorcall(self->emit_fallback, args, nargs, kwnames);
}

static int
count_delivered(PyObject *sub)
{
    PyObject *stats = PyObject_GetAttr(sub, str_stats);
    if (stats == NULL) {
        return -1;
    }
    PyObject *n = PyObject_GetAttr(stats, str_delivered);
    if (n == NULL) {
        Py_DECREF(stats);
        return -1;
    }
    PyObject *more = PyNumber_Add(n, int_one);
    Py_DECREF(n);
    if (more == NULL) {
        Py_DECREF(stats);
        return -1;
    }
    int rc = PyObject_SetAttr(stats, str_delivered, more);
    Py_DECREF(more);
    Py_DECREF(stats);
    return rc;
}

static int
append_left(PyObject **left, PyObject *item)
{
    if (item == NULL) {
        return -1;
    }
    if (*left == NULL) {
        *left = PyList_New(0);
        if (*left == NULL) {
            Py_DECREF(item);
            return -1;
        }
    }
    int rc = PyList_Append(*left, item);
    Py_DECREF(item);
    return rc;
}

/* Run one event's handlers up to their first suspension, each in its own copy of
 * the contextvars with `ctx` current. Returns None when all finished, else a list
 * for Python: (sub,) to deliver the slow way, (sub, coro, first, cv) to finish in
 * a task, (sub, exc) for a handler that raised. */
static PyObject *
caller_deliver(CallerObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyTuple_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "deliver(subs, payload, ctx)");
        return NULL;
    }
    PyObject *subs = args[0], *payload = args[1], *ctx = args[2];
    PyObject *left = NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(subs); i++) {
        PyObject *sub = PyTuple_GET_ITEM(subs, i);
        PyObject *fast = PyObject_GetAttr(sub, str_fast);
        if (fast == NULL) {
            goto error;
        }
        if (!PyTuple_CheckExact(fast) || PyTuple_GET_SIZE(fast) != 2 ||
            (PyTuple_GET_ITEM(fast, 1) != Py_None &&
             (PyObject *)Py_TYPE(payload) != PyTuple_GET_ITEM(fast, 1))) {
            Py_DECREF(fast);
            if (append_left(&left, PyTuple_Pack(1, sub)) < 0) {
                goto error;
            }
            continue;
        }
        PyObject *cv = PyContext_CopyCurrent();
        if (cv == NULL) {
            Py_DECREF(fast);
            goto error;
        }
        if (PyContext_Enter(cv) < 0) {
            Py_DECREF(cv);
            Py_DECREF(fast);
            goto error;
        }
        PyObject *token = PyContextVar_Set(self->var, ctx);
        PyObject *coro = NULL, *result = NULL;
        PySendResult st = PYGEN_ERROR;
        if (token != NULL) {
            Py_DECREF(token); /* the copy is dropped or given to a task: no reset */
            coro = PyObject_CallOneArg(PyTuple_GET_ITEM(fast, 0), payload);
            if (coro != NULL) {
                st = PyIter_Send(coro, Py_None, &result);
            }
        }
        Py_DECREF(fast);
        PyObject *type = NULL, *value = NULL, *tb = NULL;
        if (st == PYGEN_ERROR) {
            PyErr_Fetch(&type, &value, &tb);
        }
        if (PyContext_Exit(cv) < 0) {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            Py_XDECREF(coro);
            Py_XDECREF(result);
            Py_DECREF(cv);
            goto error;
        }
        int rc = 0;
        if (st == PYGEN_RETURN) {
            Py_DECREF(result);
            rc = count_delivered(sub);
        }
        else if (st == PYGEN_NEXT) {
            rc = append_left(&left, PyTuple_Pack(4, sub, coro, result, cv));
            Py_DECREF(result);
        }
        else {
            PyErr_NormalizeException(&type, &value, &tb);
            if (value != NULL && tb != NULL) {
                PyException_SetTraceback(value, tb);
            }
            rc = value == NULL ? -1 : append_left(&left, PyTuple_Pack(2, sub, value));
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
        }
        Py_XDECREF(coro);
        Py_DECREF(cv);
        if (rc < 0) {
            goto error;
        }
    }
    if (left == NULL) {
        Py_RETURN_NONE;
    }
    return left;
error:
    Py_XDECREF(left);
    return NULL;
}

static PyMethodDef caller_methods[] = {
    {"call", (PyCFunction)(void (*)(void))caller_call, METH_FASTCALL | METH_KEYWORDS,
     "call(target, /, **params): the local hot path of Kernel.call."},
    {"emit", (PyCFunction)(void (*)(void))caller_emit, METH_FASTCALL | METH_KEYWORDS,
     "emit(topic, payload=None, *, meta=None): the local hot path of Kernel.emit."},
    {"deliver", (PyCFunction)(void (*)(void))caller_deliver, METH_FASTCALL,
     "deliver(subs, payload, ctx): run one event's handlers to their first suspension."},
    {"bind_events", (PyCFunction)caller_bind_events, METH_VARARGS,
     "bind_events(emit_fallback, topics, queue, wake, max_pending)."},
    {NULL},
};

static PyMemberDef caller_members[] = {
    {"enabled", T_BOOL, offsetof(CallerObject, enabled), 0, NULL},
    {"timeout", T_DOUBLE, offsetof(CallerObject, timeout), 0, NULL},
    {"emit_enabled", T_BOOL, offsetof(CallerObject, emit_enabled), 0, NULL},
    {"max_pending", T_PYSSIZET, offsetof(CallerObject, max_pending), 0, NULL},
    {NULL},
};

static PyTypeObject Caller_Type = {
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

/* ----------------------------------------------------------------- module */

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "organelle._speedups",
    .m_doc = "C hot path of local calls (optional; see docs/benchmarks.md).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    str_calls = PyUnicode_InternFromString("calls");
    str_delivered = PyUnicode_InternFromString("delivered");
    str_stats = PyUnicode_InternFromString("stats");
    str_fast = PyUnicode_InternFromString("fast");
    str_set_result = PyUnicode_InternFromString("set_result");
    int_one = PyLong_FromLong(1);
    empty_tuple = PyTuple_New(0);
    if (str_calls == NULL || str_delivered == NULL || str_stats == NULL || str_fast == NULL ||
        str_set_result == NULL || int_one == NULL || empty_tuple == NULL) {
        return NULL;
    }
    PyTypeObject *types[] = {&ContextBase_Type, &Done_Type, &RouteBase_Type, &Caller_Type};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i]) < 0) {
            return NULL;
        }
    }
    done_none = done_new(Py_NewRef(Py_None), NULL);
    if (done_none == NULL) {
        return NULL;
    }
    ((DoneObject *)done_none)->sticky = 1;
    PyObject *m = PyModule_Create(&speedups_module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "ContextBase", (PyObject *)&ContextBase_Type) < 0 ||
        PyModule_AddObjectRef(m, "Done", (PyObject *)&Done_Type) < 0 ||
        PyModule_AddObjectRef(m, "RouteBase", (PyObject *)&RouteBase_Type) < 0 ||
        PyModule_AddObjectRef(m, "Caller", (PyObject *)&Caller_Type) < 0 ||
        PyModule_AddStringConstant(m, "SOURCE_HASH", ORGANELLE_SOURCE_HASH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
