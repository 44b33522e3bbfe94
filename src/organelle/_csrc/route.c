/* RouteBase: the fields of an RPC route the call path reads (RpcEntry subclasses it). */
#include "speedups.h"

static int
route_traverse(RouteObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fn);
    Py_VISIT(self->contract);
    Py_VISIT(self->exact);
    Py_VISIT(self->stats);
    Py_VISIT(self->checks);
    Py_VISIT(self->target);
    Py_VISIT(self->policy);
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
    Py_CLEAR(self->policy);
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
    {"inline_policy", T_BOOL, offsetof(RouteObject, inline_policy), 0, NULL},
    {NULL},
};

static PyObject *
route_get_policy(RouteObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(FIELD(self->policy));
}

static int
route_set_policy(RouteObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    return org_set_policy(&self->policy, value);
}

static PyGetSetDef route_getset[] = {
    {"policy", (getter)route_get_policy, (setter)route_set_policy, NULL, NULL},
    {NULL},
};

PyTypeObject RouteBase_Type = {
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
    .tp_getset = route_getset,
};

static PyMemberDef stats_members[] = {
    {"calls", T_PYSSIZET, offsetof(StatsObject, calls), 0, NULL},
    {NULL},
};

PyTypeObject StatsBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "organelle._speedups.StatsBase",
    .tp_basicsize = sizeof(StatsObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The call counter of CallStats: a plain C integer the call path increments.",
    .tp_new = PyType_GenericNew,
    .tp_members = stats_members,
};

/* Do the keyword values already have exactly the declared simple types? This
 * neither allocates nor runs Python code, so `checks` (a route's field) and its
 * items may be read borrowed. */
int
org_route_exact(PyObject *checks, Py_ssize_t nrequired, PyObject *const *values,
                PyObject *kwnames)
{
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
                PyObject *fname = PyTuple_GET_ITEM(f, 0);
                /* Two str never make PyUnicode_Compare fail (no error left set). */
                if (PyUnicode_Check(fname) && PyUnicode_Compare(fname, name) == 0) {
                    field = f;
                    break;
                }
            }
            if (field == NULL) {
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
    return required == nrequired;
}
