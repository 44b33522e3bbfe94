/* Finished: a local call that already finished, awaited without a coroutine frame.
 *
 * `await` gives `value` (or raises `error`) through am_send, so no StopIteration
 * is made. It is also a collections.abc.Coroutine (send/throw/close), so
 * create_task, gather and wait_for take it as they take a Python coroutine. */
#include "speedups.h"



PyObject *
org_finished_new(PyObject *value, PyObject *error)
{
    /* Steals both references. */
    FinishedObject *self = PyObject_GC_New(FinishedObject, &Finished_Type);
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
finished_traverse(FinishedObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->value);
    Py_VISIT(self->error);
    return 0;
}

static int
finished_clear(FinishedObject *self)
{
    Py_CLEAR(self->value);
    Py_CLEAR(self->error);
    return 0;
}

static void
finished_dealloc(FinishedObject *self)
{
    PyObject_GC_UnTrack(self);
    finished_clear(self);
    PyObject_GC_Del(self);
}

static PySendResult
finished_am_send(FinishedObject *self, PyObject *arg, PyObject **result)
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
finished_await(PyObject *self)
{
    return Py_NewRef(self);
}

/* The slow protocol (iter/send): raise StopIteration(value) as a generator would. */
static PyObject *
finished_iternext(FinishedObject *self)
{
    PyObject *result;
    if (finished_am_send(self, Py_None, &result) == PYGEN_ERROR) {
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
finished_send(FinishedObject *self, PyObject *arg)
{
    (void)arg;
    return finished_iternext(self);
}

static PyObject *
finished_throw(FinishedObject *self, PyObject *const *args, Py_ssize_t nargs)
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
finished_close(FinishedObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->sticky) {
        Py_RETURN_NONE;
    }
    finished_clear(self);
    Py_RETURN_NONE;
}

static PyMethodDef finished_methods[] = {
    {"send", (PyCFunction)finished_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))finished_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)finished_close, METH_NOARGS, NULL},
    {NULL},
};

static PyAsyncMethods finished_as_async = {
    .am_await = finished_await,
    .am_send = (sendfunc)finished_am_send,
};

PyTypeObject Finished_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "organelle._speedups.Finished",
    .tp_basicsize = sizeof(FinishedObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A local call that already finished; await it for the result.",
    .tp_dealloc = (destructor)finished_dealloc,
    .tp_traverse = (traverseproc)finished_traverse,
    .tp_clear = (inquiry)finished_clear,
    .tp_as_async = &finished_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)finished_iternext,
    .tp_methods = finished_methods,
};

