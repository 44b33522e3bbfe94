/* organelle._speedups: the local dispatch hot path in C.
 *
 * Optional: organelle runs the same logic in pure Python when this module is
 * absent (no compiler) or disabled (ORGANELLE_PURE=1). Everything here mirrors
 * the Python code it replaces (Calls.call, Kernel.emit, EventBus._deliver) and
 * hands anything unusual back to it, so this code only has to be right about
 * the common case. Files: context.c (Context fields), finished.c (the finished
 * awaitable), route.c (RPC route fields, exact-type check), call.c (the call
 * path), policy.c (the breaker, bulkhead and guard state the call path decides
 * on), client.c (a typed client: its methods' binding and result check, its base), events.c
 * (emit and the dispatcher's first step), ids.c (an envelope's
 * UUIDv7 and time), headers.c (the lines
 * of a NATS header block, read for every message off the wire). */
#include "speedups.h"

#ifndef ORGANELLE_SOURCE_HASH
#define ORGANELLE_SOURCE_HASH "unknown"
#endif

PyObject *org_str_calls;
PyObject *org_str_delivered;
PyObject *org_str_stats;
PyObject *org_str_fast;
PyObject *org_str_set_result;
PyObject *org_str_validate;
PyObject *org_str_make_coro;
PyObject *org_int_one;
PyObject *org_empty_tuple;
PyObject *org_finished_none;
PyObject *org_str_closed;
PyObject *org_str_left;
PyObject *org_str_leave;
PyObject *org_str_missing;

/* ----------------------------------------------------------------- module */

static PyMethodDef speedups_functions[] = {
    {"header_lines", (PyCFunction)(void (*)(void))org_header_lines, METH_FASTCALL,
     "header_lines(block, start): the name: value lines of a header block from start, as a dict."},
    {"uuid7", org_uuid7, METH_NOARGS, "uuid7(): a fresh UUIDv7 (text), increasing within the process."},
    {"utc_now", org_utc_now, METH_NOARGS, "utc_now(): datetime.now(UTC), made in C."},
    {"utc_text", org_utc_text, METH_O, "utc_text(when): the RFC 3339 text of a UTC datetime (Z)."},
    {"v5_text", org_v5_text, METH_O, "v5_text(digest): the UUIDv5 text of a SHA-1 digest."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "organelle._speedups",
    .m_doc = "C hot path of local calls (optional; see docs/benchmarks.md).",
    .m_size = -1,
    .m_methods = speedups_functions,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    org_str_calls = PyUnicode_InternFromString("calls");
    org_str_delivered = PyUnicode_InternFromString("delivered");
    org_str_stats = PyUnicode_InternFromString("stats");
    org_str_fast = PyUnicode_InternFromString("fast");
    org_str_set_result = PyUnicode_InternFromString("set_result");
    org_str_validate = PyUnicode_InternFromString("validate");
    org_str_make_coro = PyUnicode_InternFromString("make_coro");
    org_str_closed = PyUnicode_InternFromString("closed");
    org_str_left = PyUnicode_InternFromString("left");
    org_str_leave = PyUnicode_InternFromString("leave");
    org_str_missing = PyUnicode_InternFromString("_organelle_missing");
    if (org_str_closed == NULL || org_str_left == NULL || org_str_leave == NULL ||
        org_str_missing == NULL) {
        return NULL;
    }
    org_int_one = PyLong_FromLong(1);
    org_empty_tuple = PyTuple_New(0);
    if (org_str_calls == NULL || org_str_delivered == NULL || org_str_stats == NULL ||
        org_str_fast == NULL || org_str_set_result == NULL || org_str_validate == NULL ||
        org_str_make_coro == NULL || org_int_one == NULL || org_empty_tuple == NULL) {
        return NULL;
    }
    PyTypeObject *types[] = {&ContextBase_Type, &Finished_Type, &RouteBase_Type, &StatsBase_Type,
                             &Caller_Type, &BreakerCore_Type, &BulkheadCore_Type,
                             &GuardCore_Type, &ClientCall_Type,
                             &ClientBase_Type};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i]) < 0) {
            return NULL;
        }
    }
    org_finished_none = org_finished_new(Py_NewRef(Py_None), NULL);
    if (org_finished_none == NULL) {
        return NULL;
    }
    ((FinishedObject *)org_finished_none)->sticky = 1;
    PyObject *m = PyModule_Create(&speedups_module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "ContextBase", (PyObject *)&ContextBase_Type) < 0 ||
        PyModule_AddObjectRef(m, "Finished", (PyObject *)&Finished_Type) < 0 ||
        PyModule_AddObjectRef(m, "RouteBase", (PyObject *)&RouteBase_Type) < 0 ||
        PyModule_AddObjectRef(m, "StatsBase", (PyObject *)&StatsBase_Type) < 0 ||
        PyModule_AddObjectRef(m, "Caller", (PyObject *)&Caller_Type) < 0 ||
        PyModule_AddObjectRef(m, "BreakerCore", (PyObject *)&BreakerCore_Type) < 0 ||
        PyModule_AddObjectRef(m, "BulkheadCore", (PyObject *)&BulkheadCore_Type) < 0 ||
        PyModule_AddObjectRef(m, "GuardCore", (PyObject *)&GuardCore_Type) < 0 ||
        PyModule_AddObjectRef(m, "ClientCall", (PyObject *)&ClientCall_Type) < 0 ||
        PyModule_AddObjectRef(m, "ClientBase", (PyObject *)&ClientBase_Type) < 0 ||
        PyModule_AddStringConstant(m, "SOURCE_HASH", ORGANELLE_SOURCE_HASH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

