/* ClientCall: one method of a typed client (module/_client.py), bound in C.
 *
 * Binds positional and keyword arguments by name as the generated Python
 * method does, then calls the kernel's call (any callable: the C Caller's, a
 * guard's or a module view's wrapper) with keywords, through vectorcall: no
 * frame, no dict. Anything that does not bind (too many, unknown, repeated or
 * missing arguments) is handed to the generated Python method, which raises
 * Python's own TypeError; so is a method with more parameters than the C
 * buffers hold. The result: the call's awaitable itself when nothing is
 * converted; with a class hint, a Finished whose value already is an instance
 * is returned untouched; anything else goes to the Python finisher. */
#include "speedups.h"

#define CLIENT_MAX_PARAMS 32

typedef struct {
    PyObject_HEAD
    PyObject *call;       /* the kernel's call */
    PyObject *caller;     /* the C Caller whose bound `call` is `call` (called directly), or NULL */
    PyObject *prefixes;   /* names[:k] for each k: the keywords sent by a call that binds in order */
    PyObject *target;     /* "module.method" */
    PyObject *names;      /* parameter names in the order they are sent: required, then optional */
    PyObject *unset;      /* the "not given" default of optional parameters */
    PyObject *fallback;   /* the generated Python method (exact binding errors) */
    PyObject *finish;     /* None, or finish(awaitable) -> awaitable of the converted result */
    PyObject *hint;       /* a class: a Finished holding an instance of it skips finish; or NULL */
    PyObject *dict;       /* __name__, __qualname__, __doc__, __signature__ */
    vectorcallfunc vectorcall;
    Py_ssize_t nrequired; /* names[:nrequired] are required */
    Py_ssize_t npos;      /* positional-or-keyword parameters */
    char subclasses;      /* isinstance(v, hint) is a plain subtype test (no __instancecheck__) */
    char fast;            /* few enough parameters for the C buffers */
    unsigned char pos[CLIENT_MAX_PARAMS]; /* send slot of each positional parameter */
} ClientCallObject;

static int
client_traverse(ClientCallObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->call);
    Py_VISIT(self->caller);
    Py_VISIT(self->prefixes);
    Py_VISIT(self->target);
    Py_VISIT(self->names);
    Py_VISIT(self->unset);
    Py_VISIT(self->fallback);
    Py_VISIT(self->finish);
    Py_VISIT(self->hint);
    Py_VISIT(self->dict);
    return 0;
}

static int
client_clear(ClientCallObject *self)
{
    Py_CLEAR(self->call); /* first: a call after this raises (client_vectorcall) */
    Py_CLEAR(self->caller);
    Py_CLEAR(self->prefixes);
    Py_CLEAR(self->target);
    Py_CLEAR(self->names);
    Py_CLEAR(self->unset);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->finish);
    Py_CLEAR(self->hint);
    Py_CLEAR(self->dict);
    return 0;
}

static void
client_dealloc(ClientCallObject *self)
{
    PyObject_GC_UnTrack(self);
    client_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The send slot of keyword `key`, or -1 (not a parameter). Runs no Python code. */
static inline Py_ssize_t
client_slot(PyObject *names, Py_ssize_t n, PyObject *key)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyTuple_GET_ITEM(names, i) == key) {
            return i;
        }
    }
    if (!PyUnicode_Check(key)) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyUnicode_Compare(PyTuple_GET_ITEM(names, i), key) == 0) {
            return i;
        }
    }
    return -1;
}

/* Call the kernel with argv[0] (the target) and the values after it, named by `sent`. */
static inline PyObject *
client_send(ClientCallObject *self, PyObject **argv, size_t nargsf, PyObject *sent)
{
    if (self->caller != NULL) { /* kernel.call itself: no method object in between */
        return org_caller_call((CallerObject *)self->caller, argv, (Py_ssize_t)nargsf, sent);
    }
    return PyObject_Vectorcall(self->call, argv, nargsf, sent);
}

/* The declared class, when the call's result needs no conversion; else the finisher. */
static inline PyObject *
client_result(ClientCallObject *self, PyObject *res)
{
    if (res == NULL || self->finish == Py_None) {
        return res;
    }
    if (self->hint != NULL && Py_IS_TYPE(res, &Finished_Type)) {
        /* Read and tested with nothing in between that allocates or runs Python code. */
        FinishedObject *f = (FinishedObject *)res;
        PyObject *v = f->value;
        PyTypeObject *hint = (PyTypeObject *)self->hint;
        if (f->error == NULL && v != NULL &&
            (Py_IS_TYPE(v, hint) || (self->subclasses && PyType_IsSubtype(Py_TYPE(v), hint)))) {
            return res; /* already the declared type: isinstance would say so */
        }
    }
    PyObject *out = PyObject_CallOneArg(self->finish, res);
    Py_DECREF(res);
    return out;
}

/* Any other way of giving the arguments: bound by name, as Python binds them. */
static Py_NO_INLINE PyObject *
client_bind(ClientCallObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t n = PyTuple_GET_SIZE(self->names);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *slots[CLIENT_MAX_PARAMS]; /* borrowed from args (our caller's) */
    PyObject *stack[CLIENT_MAX_PARAMS + 2]; /* stack[0]: free for the callee */
    if (!self->fast || nargs > self->npos) {
        goto python;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        slots[i] = NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        slots[self->pos[i]] = args[i];
    }
    for (Py_ssize_t j = 0; j < nkw; j++) {
        Py_ssize_t k = client_slot(self->names, n, PyTuple_GET_ITEM(kwnames, j));
        if (k < 0 || slots[k] != NULL) { /* unknown, or given twice */
            goto python;
        }
        slots[k] = args[nargs + j];
    }
    for (Py_ssize_t i = 0; i < self->nrequired; i++) {
        if (slots[i] == NULL) {
            goto python;
        }
    }
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = slots[i];
        if (v != NULL && (i < self->nrequired || v != self->unset)) {
            stack[2 + m++] = v;
        }
    }
    PyObject *sent = NULL; /* the keywords' names: an optional parameter not given is not sent */
    if (m > 0) {
        sent = PyTuple_New(m);
        if (sent == NULL) {
            return NULL;
        }
        for (Py_ssize_t i = 0, k = 0; i < n; i++) {
            PyObject *v = slots[i];
            if (v != NULL && (i < self->nrequired || v != self->unset)) {
                PyTuple_SET_ITEM(sent, k++, Py_NewRef(PyTuple_GET_ITEM(self->names, i)));
            }
        }
    }
    stack[1] = self->target;
    PyObject *res = client_send(self, stack + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, sent);
    Py_XDECREF(sent);
    return client_result(self, res);
python: /* does not bind: Python's own TypeError (or a method too wide for the buffers) */
    return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
}

static PyObject *
client_vectorcall(ClientCallObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    /* The fields are set once by __init__ and cleared only when the object is
     * unreachable (our caller holds it), so they are read borrowed (speedups.h). */
    if (self->call == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "this client method is not set up (or was torn down)");
        return NULL;
    }
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    Py_ssize_t given = nargs + nkw;
    /* The common case: what was given is names[:given], in that order (positional
     * parameters first, keywords by the interned names a call site holds), all
     * required ones included, and no optional one "not given" explicitly. */
    if (given > PyTuple_GET_SIZE(self->names) || given < self->nrequired || nargs > self->npos ||
        !self->fast) {
        return client_bind(self, args, nargsf, kwnames);
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        if (self->pos[i] != i) {
            return client_bind(self, args, nargsf, kwnames);
        }
    }
    for (Py_ssize_t j = 0; j < nkw; j++) {
        if (PyTuple_GET_ITEM(kwnames, j) != PyTuple_GET_ITEM(self->names, nargs + j)) {
            return client_bind(self, args, nargsf, kwnames);
        }
    }
    for (Py_ssize_t i = self->nrequired; i < given; i++) {
        if (args[i] == self->unset) {
            return client_bind(self, args, nargsf, kwnames);
        }
    }
    /* Sent as it came: the same values, and the call site's own names when all were
     * keywords. The target goes in front, in the slot our caller lends when it can. */
    PyObject *sent = given == 0 ? NULL
                     : nargs == 0 ? kwnames
                                  : PyTuple_GET_ITEM(self->prefixes, given);
    PyObject *res;
    if (nargsf & PY_VECTORCALL_ARGUMENTS_OFFSET) {
        PyObject **argv = (PyObject **)args - 1;
        PyObject *lent = argv[0];
        argv[0] = self->target;
        res = client_send(self, argv, 1, sent);
        argv[0] = lent; /* restored, as PEP 590 asks */
    }
    else {
        PyObject *stack[CLIENT_MAX_PARAMS + 2];
        stack[1] = self->target;
        for (Py_ssize_t i = 0; i < given; i++) {
            stack[2 + i] = args[i];
        }
        res = client_send(self, stack + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, sent);
    }
    return client_result(self, res);
}

static int
client_init(ClientCallObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"call", "target", "names", "positional", "nrequired", "unset",
                             "fallback", "finish", "hint", "subclasses", NULL};
    PyObject *call, *target, *names, *positional, *unset, *fallback, *finish, *hint;
    Py_ssize_t nrequired;
    int subclasses;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OUO!O!nOOOOp:ClientCall", kwlist, &call, &target,
                                     &PyTuple_Type, &names, &PyTuple_Type, &positional,
                                     &nrequired, &unset, &fallback, &finish, &hint, &subclasses)) {
        return -1;
    }
    if (self->call != NULL) { /* set once: a running call reads the fields borrowed */
        PyErr_SetString(PyExc_RuntimeError, "a ClientCall is set up once");
        return -1;
    }
    if (!PyCallable_Check(call) || !PyCallable_Check(fallback) ||
        (finish != Py_None && !PyCallable_Check(finish))) {
        PyErr_SetString(PyExc_TypeError, "call, fallback and finish must be callable");
        return -1;
    }
    if (hint != Py_None && !PyType_Check(hint)) {
        PyErr_SetString(PyExc_TypeError, "hint must be a class or None");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(names), npos = PyTuple_GET_SIZE(positional);
    if (nrequired < 0 || nrequired > n || npos > n) {
        PyErr_SetString(PyExc_ValueError, "nrequired and positional must fit names");
        return -1;
    }
    int fast = n <= CLIENT_MAX_PARAMS;
    unsigned char pos[CLIENT_MAX_PARAMS];
    PyObject *interned = PyTuple_New(n);
    if (interned == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (!PyUnicode_CheckExact(name)) {
            PyErr_SetString(PyExc_TypeError, "names must be str");
            Py_DECREF(interned);
            return -1;
        }
        Py_INCREF(name);
        PyUnicode_InternInPlace(&name);
        PyTuple_SET_ITEM(interned, i, name);
    }
    for (Py_ssize_t i = 0; i < npos && fast; i++) {
        Py_ssize_t k = PyLong_AsSsize_t(PyTuple_GET_ITEM(positional, i));
        if (k == -1 && PyErr_Occurred()) {
            Py_DECREF(interned);
            return -1;
        }
        if (k < 0 || k >= n) {
            PyErr_SetString(PyExc_ValueError, "positional holds slots of names");
            Py_DECREF(interned);
            return -1;
        }
        pos[i] = (unsigned char)k;
    }
    PyObject *prefixes = PyTuple_New(n + 1);
    if (prefixes == NULL) {
        Py_DECREF(interned);
        return -1;
    }
    for (Py_ssize_t k = 0; k <= n; k++) {
        PyObject *prefix = k == n ? Py_NewRef(interned) : PyTuple_GetSlice(interned, 0, k);
        if (prefix == NULL) {
            Py_DECREF(prefixes);
            Py_DECREF(interned);
            return -1;
        }
        PyTuple_SET_ITEM(prefixes, k, prefix);
    }
    self->call = Py_NewRef(call);
    /* kernel.call is the C Caller's bound method: call it without the method object. */
    if (PyCFunction_Check(call) &&
        PyCFunction_GET_FUNCTION(call) == (PyCFunction)(void (*)(void))org_caller_call &&
        PyCFunction_GET_SELF(call) != NULL && Py_IS_TYPE(PyCFunction_GET_SELF(call), &Caller_Type)) {
        self->caller = Py_NewRef(PyCFunction_GET_SELF(call));
    }
    self->prefixes = prefixes;
    self->target = Py_NewRef(target);
    self->names = interned;
    self->unset = Py_NewRef(unset);
    self->fallback = Py_NewRef(fallback);
    self->finish = Py_NewRef(finish);
    self->hint = hint == Py_None ? NULL : Py_NewRef(hint);
    self->nrequired = nrequired;
    self->npos = npos;
    self->subclasses = (char)subclasses;
    self->fast = (char)fast;
    if (fast) {
        memcpy(self->pos, pos, (size_t)npos);
    }
    return 0;
}

static PyObject *
client_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    ClientCallObject *self = (ClientCallObject *)PyType_GenericNew(type, args, kwds);
    if (self != NULL) { /* callable before __init__: it raises instead of crashing */
        self->vectorcall = (vectorcallfunc)client_vectorcall;
    }
    return (PyObject *)self;
}

/* As a Python function's repr: the generated method's qualified name. */
static PyObject *
client_repr(ClientCallObject *self)
{
    PyObject *name = NULL;
    if (self->dict != NULL) {
        name = PyDict_GetItemString(self->dict, "__qualname__"); /* str keys: no Python code */
    }
    if (name == NULL || !PyUnicode_Check(name)) {
        name = self->target != NULL ? self->target : Py_None;
    }
    Py_INCREF(name); /* the dict is writable from Python; the format may allocate */
    PyObject *text = PyUnicode_FromFormat("<function %S at %p>", name, self);
    Py_DECREF(name);
    return text;
}

static PyMemberDef client_members[] = {
    {"target", T_OBJECT, offsetof(ClientCallObject, target), READONLY, "\"module.method\"."},
    {NULL},
};

static PyGetSetDef client_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL},
};

PyTypeObject ClientCall_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "organelle._speedups.ClientCall",
    .tp_basicsize = sizeof(ClientCallObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "One method of a typed client, bound and called in C (see module/_client.py).",
    .tp_new = client_new,
    .tp_init = (initproc)client_init,
    .tp_dealloc = (destructor)client_dealloc,
    .tp_traverse = (traverseproc)client_traverse,
    .tp_clear = (inquiry)client_clear,
    .tp_repr = (reprfunc)client_repr,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(ClientCallObject, vectorcall),
    .tp_dictoffset = offsetof(ClientCallObject, dict),
    .tp_members = client_members,
    .tp_getset = client_getset,
};

/* ClientBase: the base of TypedClient (module/_client.py). An attribute is looked
 * up in the instance dict first (a client's methods live there), else as usual,
 * and a missing one is explained by the class's _organelle_missing(name): what a
 * __getattr__ does, without slowing every lookup down as one would. */
typedef struct {
    PyObject_HEAD
    PyObject *dict;
} ClientBaseObject;

static int
client_base_traverse(ClientBaseObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict); /* a heap subclass's type: subtype_traverse visits it */
    return 0;
}

static int
client_base_clear(ClientBaseObject *self)
{
    Py_CLEAR(self->dict);
    return 0;
}

static void
client_base_dealloc(ClientBaseObject *self)
{
    /* A heap subclass's reference to its type is subtype_dealloc's to drop. */
    PyObject_GC_UnTrack(self);
    client_base_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
client_base_getattro(ClientBaseObject *self, PyObject *name)
{
    PyObject *dict = self->dict;
    if (dict != NULL && PyUnicode_CheckExact(name)) {
        /* str keys (set by __init__): the lookup runs no Python code */
        PyObject *value = PyDict_GetItemWithError(dict, name);
        if (value != NULL) {
            return Py_NewRef(value);
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    PyObject *value = PyObject_GenericGetAttr((PyObject *)self, name);
    if (value != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError)) {
        return value;
    }
    PyErr_Clear();
    return PyObject_CallMethodOneArg((PyObject *)self, org_str_missing, name);
}

static PyGetSetDef client_base_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL},
};

PyTypeObject ClientBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "organelle._speedups.ClientBase",
    .tp_basicsize = sizeof(ClientBaseObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The base of a typed client: its methods are found in its dict first.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)client_base_dealloc,
    .tp_traverse = (traverseproc)client_base_traverse,
    .tp_clear = (inquiry)client_base_clear,
    .tp_getattro = (getattrofunc)client_base_getattro,
    .tp_dictoffset = offsetof(ClientBaseObject, dict),
    .tp_getset = client_base_getset,
};
