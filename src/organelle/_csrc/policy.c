/* The state of call policies that the C call path decides on (kernel/_policy.py).
 *
 * BreakerCore, BulkheadCore and GuardCore are the bases of the Python Breaker,
 * Bulkhead and Guard: their counters live here, so the Python code and the C
 * call path read and write the same state (one source of truth). C decides
 * only the common case (bulkhead room, breaker closed, handler done in its
 * first step, a success); everything else is the Python code's, called from
 * here or reached by handing the whole call back (see call.c). */
#include "speedups.h"

/* ------------------------------------------------------------ BreakerCore */

static int
breaker_init(BreakerCoreObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"window", NULL};
    Py_ssize_t window;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n:BreakerCore", kwlist, &window)) {
        return -1;
    }
    if (window < 1) {
        PyErr_SetString(PyExc_ValueError, "window must be at least 1");
        return -1;
    }
    char *ring = PyMem_Calloc((size_t)window, 1);
    if (ring == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyMem_Free(self->ring);
    self->ring = ring;
    self->window = window;
    self->seen = self->bad = self->head = 0;
    self->consecutive = 0;
    Py_XSETREF(self->state, Py_NewRef(org_str_closed));
    return 0;
}

static int
breaker_traverse(BreakerCoreObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->state);
    return 0;
}

static int
breaker_clear(BreakerCoreObject *self)
{
    Py_CLEAR(self->state);
    return 0;
}

static void
breaker_dealloc(BreakerCoreObject *self)
{
    PyObject_GC_UnTrack(self);
    breaker_clear(self);
    PyMem_Free(self->ring);
    self->ring = NULL;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
breaker_push(BreakerCoreObject *self, PyObject *ok)
{
    int good = PyObject_IsTrue(ok);
    if (good < 0) {
        return NULL;
    }
    org_breaker_push(self, good);
    Py_RETURN_NONE;
}

static PyObject *
breaker_forget(BreakerCoreObject *self, PyObject *Py_UNUSED(ignored))
{
    self->seen = self->bad = self->head = 0;
    Py_RETURN_NONE;
}

static PyMethodDef breaker_methods[] = {
    {"push", (PyCFunction)breaker_push, METH_O,
     "push(ok): add one outcome to the window (the oldest drops out when it is full)."},
    {"forget", (PyCFunction)breaker_forget, METH_NOARGS, "forget(): empty the window."},
    {NULL},
};

static PyMemberDef breaker_members[] = {
    {"state", T_OBJECT_EX, offsetof(BreakerCoreObject, state), 0, NULL},
    {"consecutive", T_PYSSIZET, offsetof(BreakerCoreObject, consecutive), 0, NULL},
    {"seen", T_PYSSIZET, offsetof(BreakerCoreObject, seen), READONLY, NULL},
    {"bad", T_PYSSIZET, offsetof(BreakerCoreObject, bad), READONLY, NULL},
    {"window", T_PYSSIZET, offsetof(BreakerCoreObject, window), READONLY, NULL},
    {NULL},
};

PyTypeObject BreakerCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "organelle._speedups.BreakerCore",
    .tp_basicsize = sizeof(BreakerCoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A circuit breaker's state and outcome window, shared by the C and Python paths.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)breaker_init,
    .tp_dealloc = (destructor)breaker_dealloc,
    .tp_traverse = (traverseproc)breaker_traverse,
    .tp_clear = (inquiry)breaker_clear,
    .tp_methods = breaker_methods,
    .tp_members = breaker_members,
};

/* ----------------------------------------------------------- BulkheadCore */

static int
bulkhead_traverse(BulkheadCoreObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->waiters);
    return 0;
}

static int
bulkhead_clear(BulkheadCoreObject *self)
{
    Py_CLEAR(self->waiters);
    return 0;
}

static void
bulkhead_dealloc(BulkheadCoreObject *self)
{
    PyObject_GC_UnTrack(self);
    bulkhead_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef bulkhead_members[] = {
    {"active", T_PYSSIZET, offsetof(BulkheadCoreObject, active), 0, NULL},
    {"limit", T_PYSSIZET, offsetof(BulkheadCoreObject, limit), 0, NULL},
    {"waiters", T_OBJECT_EX, offsetof(BulkheadCoreObject, waiters), 0, NULL},
    {NULL},
};

PyTypeObject BulkheadCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "organelle._speedups.BulkheadCore",
    .tp_basicsize = sizeof(BulkheadCoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A bulkhead's counters (running calls, the limit, the wait queue).",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)bulkhead_dealloc,
    .tp_traverse = (traverseproc)bulkhead_traverse,
    .tp_clear = (inquiry)bulkhead_clear,
    .tp_members = bulkhead_members,
};

/* -------------------------------------------------------------- GuardCore */

static int
guard_traverse(GuardCoreObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->breaker);
    Py_VISIT(self->bulkhead);
    return 0;
}

static int
guard_clear(GuardCoreObject *self)
{
    Py_CLEAR(self->breaker);
    Py_CLEAR(self->bulkhead);
    return 0;
}

static void
guard_dealloc(GuardCoreObject *self)
{
    PyObject_GC_UnTrack(self);
    guard_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A field that holds `type` or None, checked when set, so the call path need not
 * check it on every call (a type check walks the subclass's MRO). */
static int
set_typed(PyObject **field, PyObject *value, PyTypeObject *type, const char *what)
{
    if (value == NULL) {
        PyErr_Format(PyExc_AttributeError, "%s cannot be deleted", what);
        return -1;
    }
    if (value != Py_None && !PyObject_TypeCheck(value, type)) {
        PyErr_Format(PyExc_TypeError, "%s must be a %s or None", what, type->tp_name);
        return -1;
    }
    Py_XSETREF(*field, Py_NewRef(value));
    return 0;
}

int
org_set_policy(PyObject **field, PyObject *value)
{
    return set_typed(field, value, &GuardCore_Type, "policy");
}

static PyObject *
guard_get_breaker(GuardCoreObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(FIELD(self->breaker));
}

static int
guard_set_breaker(GuardCoreObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    return set_typed(&self->breaker, value, &BreakerCore_Type, "breaker");
}

static PyObject *
guard_get_bulkhead(GuardCoreObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(FIELD(self->bulkhead));
}

static int
guard_set_bulkhead(GuardCoreObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    return set_typed(&self->bulkhead, value, &BulkheadCore_Type, "bulkhead");
}

static PyGetSetDef guard_getset[] = {
    {"breaker", (getter)guard_get_breaker, (setter)guard_set_breaker, NULL, NULL},
    {"bulkhead", (getter)guard_get_bulkhead, (setter)guard_set_bulkhead, NULL, NULL},
    {NULL},
};

static PyMemberDef guard_members[] = {
    {"timeout", T_DOUBLE, offsetof(GuardCoreObject, timeout), 0, NULL},
    {"fast", T_BOOL, offsetof(GuardCoreObject, fast), 0, NULL},
    {NULL},
};

PyTypeObject GuardCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "organelle._speedups.GuardCore",
    .tp_basicsize = sizeof(GuardCoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "What the C call path reads of a Guard: its breaker, bulkhead and timeout.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)guard_dealloc,
    .tp_traverse = (traverseproc)guard_traverse,
    .tp_clear = (inquiry)guard_clear,
    .tp_members = guard_members,
    .tp_getset = guard_getset,
};
