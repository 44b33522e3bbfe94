/* The local event path in C: Kernel.emit's hot path and the dispatcher's first step.
 *
 * emit queues (subs, payload, ctx) on the bus's deque and wakes the idle
 * dispatcher; deliver runs each handler to its first suspension in its own
 * copy of the contextvars and leaves the rest (slow deliveries, suspended
 * handlers, failures) to the Python bus. */
#include "speedups.h"

/* The local hot path of Kernel.emit: queue (subs, payload, ctx) and wake the dispatcher.
 * Anything else (meta, an unrouted topic, a full queue, a transport) is
 * the Python emit's. */
PyObject *
org_caller_emit(CallerObject *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (!org_caller_alive(self)) {
        return NULL;
    }
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
    if (parent != Py_None && Py_TYPE(parent) != self->ctx_type) {
        Py_DECREF(parent);
        goto fallback;
    }
    /* Past every fallback: on_event listeners (metrics, tracing, tests) hear of it once. */
    Py_INCREF(subs); /* a listener runs Python code, which may drop the route cache */
    if (self->listeners != NULL && self->emitted != NULL && PyList_GET_SIZE(self->listeners) > 0) {
        PyObject *told = PyObject_CallFunctionObjArgs(self->emitted, topic, payload, NULL);
        if (told == NULL) {
            Py_DECREF(subs);
            Py_DECREF(parent);
            return NULL;
        }
        Py_DECREF(told);
    }
    if (PyTuple_GET_SIZE(subs) == 0) {
        Py_DECREF(subs);
        Py_DECREF(parent);
        return Py_NewRef(org_done_none);
    }
    PyObject *ctx = org_context_next(self, parent, Py_None, topic);
    Py_DECREF(parent);
    if (ctx == NULL) {
        Py_DECREF(subs);
        return NULL;
    }
    PyObject *item = PyTuple_Pack(3, subs, payload, ctx);
    Py_DECREF(subs);
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
        r = PyObject_CallMethodOneArg(waker, org_str_set_result, Py_None);
        Py_DECREF(waker);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    }
    return Py_NewRef(org_done_none);
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
    PyObject *stats = PyObject_GetAttr(sub, org_str_stats);
    if (stats == NULL) {
        return -1;
    }
    int rc = org_incr_attr(stats, org_str_delivered);
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
PyObject *
org_caller_deliver(CallerObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyTuple_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "deliver(subs, payload, ctx)");
        return NULL;
    }
    if (!org_caller_alive(self)) {
        return NULL;
    }
    PyObject *subs = args[0], *payload = args[1], *ctx = args[2];
    PyObject *left = NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(subs); i++) {
        PyObject *sub = PyTuple_GET_ITEM(subs, i);
        PyObject *fast = PyObject_GetAttr(sub, org_str_fast);
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

