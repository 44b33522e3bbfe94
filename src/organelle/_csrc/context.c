/* The fields of organelle.Context, stored in C (the methods are Python's). */
#include "speedups.h"

/* Steals every reference it is given (and releases them on failure): callers take
 * them before anything that can run the GC, allocating this context included. */
PyObject *
org_context_make(PyTypeObject *type, PyObject *seq, PyObject *deadline, PyObject *corr,
                 PyObject *cause, PyObject *principal, PyObject *meta, PyObject *topic)
{
    ContextObject *self = (ContextObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(seq);
        Py_DECREF(deadline);
        Py_DECREF(corr);
        Py_DECREF(cause);
        Py_DECREF(principal);
        Py_DECREF(meta);
        Py_DECREF(topic);
        return NULL;
    }
    self->seq = seq;
    self->deadline = deadline;
    self->corr = corr;
    self->cause = cause;
    self->principal = principal;
    self->meta = meta;
    self->topic = topic;
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
    /* The parsed arguments are borrowed from this call's own args and kwargs. */
    meta = meta == NULL ? PyDict_New() : Py_NewRef(meta);
    if (meta == NULL) {
        return NULL;
    }
    return org_context_make(type, Py_NewRef(seq), Py_NewRef(deadline), Py_NewRef(corr),
                            Py_NewRef(cause), Py_NewRef(principal), meta, Py_NewRef(topic));
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

PyTypeObject ContextBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "organelle._speedups.ContextBase",
    .tp_basicsize = sizeof(ContextObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Fields of organelle.Context, stored in C (not tracked by the GC).",
    .tp_new = context_new,
    .tp_dealloc = (destructor)context_dealloc,
    .tp_members = context_members,
};

