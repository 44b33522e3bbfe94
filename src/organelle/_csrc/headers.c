/* header_lines(block, start): the lines of a NATS header block as a dict.
 *
 * The C form of the loop in transport/_nats_headers.py parse_headers, which
 * every message read runs (an event carries a dozen lines). Same result as
 *     {name.strip().lower(): value.strip() for each "name:value" line}
 * over block.decode(errors="replace")[start:].split("\r\n"), a later line
 * winning: lines are split at CRLF and at the first ':' on the bytes (ASCII
 * bytes decode to themselves and never sit inside a UTF-8 sequence, so this
 * equals splitting the decoded text), each part then decoded with "replace",
 * stripped of Unicode whitespace and the name lower-cased as str does. */
#include "speedups.h"

/* s.strip() (Unicode whitespace, as str.strip with no argument). Steals s. */
static PyObject *
strip_str(PyObject *s)
{
    if (s == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(s), lo = 0, hi = n;
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    while (lo < hi && Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, lo))) {
        lo++;
    }
    while (hi > lo && Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, hi - 1))) {
        hi--;
    }
    if (lo == 0 && hi == n) {
        return s;
    }
    PyObject *out = PyUnicode_Substring(s, lo, hi);
    Py_DECREF(s);
    return out;
}

/* s.lower(), without a new object when nothing changes. Steals s. */
static PyObject *
lower_str(PyObject *s)
{
    if (s == NULL) {
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(s)) {
        PyObject *out = PyObject_CallMethod(s, "lower", NULL);
        Py_DECREF(s);
        return out;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    const Py_UCS1 *src = PyUnicode_1BYTE_DATA(s);
    Py_ssize_t i = 0;
    while (i < n && !(src[i] >= 'A' && src[i] <= 'Z')) {
        i++;
    }
    if (i == n) {
        return s;
    }
    PyObject *out = PyUnicode_New(n, 127);
    if (out == NULL) {
        Py_DECREF(s);
        return NULL;
    }
    Py_UCS1 *dst = PyUnicode_1BYTE_DATA(out);
    for (Py_ssize_t j = 0; j < n; j++) {
        Py_UCS1 c = src[j];
        dst[j] = (c >= 'A' && c <= 'Z') ? (Py_UCS1)(c + ('a' - 'A')) : c;
    }
    Py_DECREF(s);
    return out;
}

/* Whitespace str.strip removes that is one byte in UTF-8 (ASCII). */
static inline int
ascii_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= '\x1c' && c <= '\x1f');
}

/* decode(errors="replace").strip() of p[0:n]: ASCII whitespace cut on the bytes,
 * what else str.strip removes (U+0085, U+00A0, U+2000...) cut after decoding. */
static PyObject *
decode_strip(const char *p, Py_ssize_t n)
{
    while (n > 0 && ascii_space(p[0])) {
        p++;
        n--;
    }
    while (n > 0 && ascii_space(p[n - 1])) {
        n--;
    }
    PyObject *s = PyUnicode_DecodeUTF8(p, n, "replace");
    if (s == NULL || PyUnicode_IS_ASCII(s)) {
        return s;
    }
    return strip_str(s);
}

/* Header names repeat from message to message: the last few seen, by their bytes. */
#define NAME_SLOTS 32
#define NAME_MAX_BYTES 40
static struct {
    Py_ssize_t len;
    char raw[NAME_MAX_BYTES];
    PyObject *name;
} names[NAME_SLOTS];
static int next_slot;

static PyObject *
header_name(const char *p, Py_ssize_t n)
{
    if (n <= NAME_MAX_BYTES) {
        for (int i = 0; i < NAME_SLOTS; i++) {
            if (names[i].name != NULL && names[i].len == n && memcmp(names[i].raw, p, n) == 0) {
                return Py_NewRef(names[i].name);
            }
        }
    }
    PyObject *name = lower_str(decode_strip(p, n));
    if (name != NULL && n <= NAME_MAX_BYTES) {
        int i = next_slot;
        next_slot = (next_slot + 1) % NAME_SLOTS;
        Py_XSETREF(names[i].name, Py_NewRef(name));
        names[i].len = n;
        memcpy(names[i].raw, p, n);
    }
    return name;
}

static int
add_line(PyObject *out, const char *line, Py_ssize_t len)
{
    const char *colon = memchr(line, ':', (size_t)len);
    if (colon == NULL) {
        return 0;
    }
    Py_ssize_t at = colon - line;
    PyObject *name = header_name(line, at);
    if (name == NULL) {
        return -1;
    }
    PyObject *value = decode_strip(colon + 1, len - at - 1);
    if (value == NULL) {
        Py_DECREF(name);
        return -1;
    }
    int rc = PyDict_SetItem(out, name, value);
    Py_DECREF(name);
    Py_DECREF(value);
    return rc;
}

PyObject *
org_header_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "header_lines(block: bytes, start: int)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    const char *buf = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    if (start < 0 || start > size) {
        PyErr_SetString(PyExc_ValueError, "start outside the block");
        return NULL;
    }
    PyObject *out = PyDict_New();
    if (out == NULL) {
        return NULL;
    }
    Py_ssize_t pos = start;
    while (1) {
        Py_ssize_t end = pos;
        while (1) {
            const char *cr = memchr(buf + end, '\r', (size_t)(size - end));
            if (cr == NULL || cr + 1 >= buf + size) { /* the last line runs to the end */
                end = size;
                break;
            }
            end = cr - buf;
            if (buf[end + 1] == '\n') {
                break;
            }
            end++;
        }
        if (add_line(out, buf + pos, end - pos) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        if (end >= size) {
            break;
        }
        pos = end + 2;
    }
    return out;
}
