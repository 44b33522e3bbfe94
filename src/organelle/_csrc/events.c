/* The local event path in C: Kernel.emit's hot path and the dispatcher's first step.
 *
 * emit queues (subs, payload, ctx) on the bus's deque and wakes the idle
 * dispatcher; deliver runs each handler to its first suspension in its own
 * copy of the contextvars, in priority order, and leaves the rest (suspended
 * handlers, failures, skips) to the Python bus. */
#include "speedups.h"

/* Wake the idle dispatcher if it waits (its slot is emptied first, as Python does). */
static int
wake_dispatcher(CallerObject *self)
{
    PyObject *waker = PyList_GetItem(self->wake, 0); /* bounds-checked: Python owns the list */
    if (waker == NULL) {
        return -1;
    }
    if (waker == Py_None) {
        return 0;
    }
    Py_INCREF(waker); /* held: emptying the slot drops the list's reference */
    Py_INCREF(Py_None);
    if (PyList_SetItem(self->wake, 0, Py_None) < 0) {
        Py_DECREF(waker);
        return -1;
    }
    PyObject *r = PyObject_CallMethodOneArg(waker, org_str_set_result, Py_None);
    Py_DECREF(waker);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

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
    if (self->emit_fallback == NULL) { /* bind_events sets every event field at once */
        PyErr_SetString(PyExc_RuntimeError, "emit is not bound to an event bus");
        return NULL;
    }
    if (!self->emit_enabled || nargs < 1 || nargs > 2 ||
        (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0) || !PyUnicode_CheckExact(args[0])) {
        return PyObject_Vectorcall(self->emit_fallback, args, nargs, kwnames);
    }
    PyObject *topic = args[0];
    PyObject *payload = nargs == 2 ? args[1] : Py_None;
    PyObject *subs = PyDict_GetItemWithError(self->topics, topic);
    if (subs == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        /* not routed yet: Python checks the topic and caches its route */
        return PyObject_Vectorcall(self->emit_fallback, args, nargs, kwnames);
    }
    if (!PyTuple_CheckExact(subs)) {
        return PyObject_Vectorcall(self->emit_fallback, args, nargs, kwnames);
    }
    /* Held at once: the queue's length, a listener and the allocations below can run
     * Python code (a finalizer, a deque subclass) that drops the route cache. */
    Py_INCREF(subs);
    PyObject *parent = NULL, *ctx, *item, *r, *out = NULL;
    Py_ssize_t queued = PyObject_Length(self->queue);
    if (queued < 0) {
        goto done;
    }
    if (queued >= self->max_pending) {
        goto slow; /* full: Python waits for room */
    }
    if (PyContextVar_Get(self->var, Py_None, &parent) < 0) {
        goto done;
    }
    if (parent != Py_None && Py_TYPE(parent) != self->ctx_type) {
        goto slow;
    }
    /* Past every fallback: on_event listeners (metrics, tracing, tests) hear of it once. */
    if (PyList_GET_SIZE(self->listeners) > 0) {
        r = PyObject_CallFunctionObjArgs(self->emitted, topic, payload, NULL);
        if (r == NULL) {
            goto done;
        }
        Py_DECREF(r);
    }
    if (PyTuple_GET_SIZE(subs) == 0) {
        out = Py_NewRef(org_finished_none);
        goto done;
    }
    ctx = org_context_next(self, parent, Py_None, topic);
    if (ctx == NULL) {
        goto done;
    }
    item = PyTuple_Pack(3, subs, payload, ctx);
    Py_DECREF(ctx);
    if (item == NULL) {
        goto done;
    }
    r = PyObject_CallOneArg(self->append, item);
    Py_DECREF(item);
    if (r == NULL) {
        goto done;
    }
    Py_DECREF(r);
    if (wake_dispatcher(self) == 0) {
        out = Py_NewRef(org_finished_none);
    }
done:
    Py_XDECREF(parent);
    Py_DECREF(subs);
    return out;
slow:
    Py_XDECREF(parent);
    Py_DECREF(subs);
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

/* Run one event's handlers up to their first suspension, in the order of `subs`
 * (priority order), each in its own copy of the contextvars with `ctx` current.
 * A subscription whose `fast` does not fit this payload (filter, conversion, no
 * payload parameter) starts through its make_coro, in its turn: handing it back
 * to run after the others would break the priority order. Returns None when all
 * finished, else a list for Python in the same order: (sub, coro, first, cv) to
 * finish in a task, (sub, exc) for a handler that raised or was skipped. */
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
        int plain = PyTuple_CheckExact(fast) && PyTuple_GET_SIZE(fast) == 2 &&
                    (PyTuple_GET_ITEM(fast, 1) == Py_None ||
                     (PyObject *)Py_TYPE(payload) == PyTuple_GET_ITEM(fast, 1));
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
            coro = plain ? PyObject_CallOneArg(PyTuple_GET_ITEM(fast, 0), payload)
                         : PyObject_CallMethodOneArg(sub, org_str_make_coro, payload);
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
        int rc = 0, stop = 0;
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
            /* Not an Exception (cancellation, exit): Python re-raises it and, as on
             * the pure path, no later handler starts. */
            stop = value != NULL && !PyObject_TypeCheck(value, (PyTypeObject *)PyExc_Exception);
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
        if (stop) {
            break;
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
