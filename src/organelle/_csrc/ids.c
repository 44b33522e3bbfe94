/* uuid7() and utc_now(): the id and time of an event's envelope, made in one C call each.
 *
 * The C form of envelope/_ids.py uuid7 and of datetime.now(UTC), which every
 * envelope built on this node runs (the pure Python forms cost more than the
 * rest of the envelope). Same layout as the Python uuid7 (RFC 9562): 48 bits
 * of Unix milliseconds, version 7, a 12-bit counter that starts at a random
 * point each millisecond and borrows the next millisecond when it runs out
 * (ids from one process increase), the variant, 62 random bits. Random bits
 * come from os.urandom, 256 ids' worth per call; the GIL is held throughout,
 * so no two calls share them. */
#include "speedups.h"

#include <datetime.h>
#include <time.h>

#define RANDOM_IDS 256
#define COUNTER_MAX 0xFFF

static long long last_ms = -1;
static int counter;
static unsigned char pool[RANDOM_IDS * 8];
static int pool_next = RANDOM_IDS; /* empty: filled on first use */
static PyObject *urandom;          /* os.urandom, looked up once */

/* Fill `pool` from os.urandom. */
static int
refill(void)
{
    if (urandom == NULL) {
        PyObject *os = PyImport_ImportModule("os");
        if (os == NULL) {
            return -1;
        }
        urandom = PyObject_GetAttrString(os, "urandom");
        Py_DECREF(os);
        if (urandom == NULL) {
            return -1;
        }
    }
    PyObject *bytes = PyObject_CallFunction(urandom, "n", (Py_ssize_t)sizeof(pool));
    if (bytes == NULL) {
        return -1;
    }
    if (!PyBytes_Check(bytes) || PyBytes_GET_SIZE(bytes) != (Py_ssize_t)sizeof(pool)) {
        Py_DECREF(bytes);
        PyErr_SetString(PyExc_RuntimeError, "os.urandom returned the wrong size");
        return -1;
    }
    memcpy(pool, PyBytes_AS_STRING(bytes), sizeof(pool));
    Py_DECREF(bytes);
    pool_next = 0;
    return 0;
}

static const char HEX[] = "0123456789abcdef";

static void
put_hex(char *out, unsigned long long value, int digits)
{
    for (int i = digits - 1; i >= 0; i--) {
        out[i] = HEX[value & 0xF];
        value >>= 4;
    }
}

PyObject *
org_uuid7(PyObject *module, PyObject *unused)
{
    struct timespec now;
    if (clock_gettime(CLOCK_REALTIME, &now) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    if (pool_next >= RANDOM_IDS && refill() < 0) {
        return NULL;
    }
    const unsigned char *r = pool + 8 * pool_next++;
    long long ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    if (ms > last_ms) {
        last_ms = ms;
        counter = (int)r[7] << 2; /* a random start, room to count up */
    }
    else if (++counter > COUNTER_MAX) { /* borrow the next millisecond */
        last_ms++;
        counter = 0;
    }
    unsigned long long bits = 0;
    for (int i = 0; i < 7; i++) {
        bits = bits << 8 | r[i];
    }
    /* 56 bits drawn, 6 more from r[7]'s low bits: 62 random bits after the variant */
    bits = bits << 6 | (r[7] & 0x3F);
    unsigned long long t = (unsigned long long)last_ms;
    char text[36];
    put_hex(text, t >> 16 & 0xFFFFFFFFULL, 8);
    text[8] = '-';
    put_hex(text + 9, t & 0xFFFF, 4);
    text[13] = '-';
    text[14] = '7';
    put_hex(text + 15, (unsigned long long)counter, 3);
    text[18] = '-';
    /* variant 0b10 then the top 2 of the 62 random bits make the 17th digit */
    text[19] = HEX[0x8 | (bits >> 60 & 0x3)];
    put_hex(text + 20, bits >> 48 & 0xFFF, 3);
    text[23] = '-';
    put_hex(text + 24, bits & 0xFFFFFFFFFFFFULL, 12);
    return PyUnicode_FromStringAndSize(text, 36);
}

PyObject *
org_utc_now(PyObject *module, PyObject *unused)
{
    if (PyDateTimeAPI == NULL) {
        PyDateTime_IMPORT;
        if (PyDateTimeAPI == NULL) {
            return NULL;
        }
    }
    struct timespec now;
    struct tm parts;
    if (clock_gettime(CLOCK_REALTIME, &now) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    if (gmtime_r(&now.tv_sec, &parts) == NULL) {
        PyErr_SetString(PyExc_OverflowError, "the clock is out of range");
        return NULL;
    }
    return PyDateTimeAPI->DateTime_FromDateAndTime(
        parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min,
        parts.tm_sec > 59 ? 59 : parts.tm_sec, (int)(now.tv_nsec / 1000), PyDateTime_TimeZone_UTC,
        PyDateTimeAPI->DateTimeType);
}

/* utc_text(when): envelope/_envelope.py _utc_text in C, the ce-time of a UTC datetime:
 * "YYYY-MM-DDTHH:MM:SS.ffffffZ", or without the fraction when it is zero. The
 * caller checks that when.tzinfo is UTC; anything not a datetime is a TypeError. */
PyObject *
org_utc_text(PyObject *module, PyObject *when)
{
    if (PyDateTimeAPI == NULL) {
        PyDateTime_IMPORT;
        if (PyDateTimeAPI == NULL) {
            return NULL;
        }
    }
    if (!PyDateTime_Check(when)) {
        PyErr_SetString(PyExc_TypeError, "utc_text() takes a datetime");
        return NULL;
    }
    int year = PyDateTime_GET_YEAR(when), micro = PyDateTime_DATE_GET_MICROSECOND(when);
    char text[32];
    int n = snprintf(text, sizeof(text), "%04d-%02d-%02dT%02d:%02d:%02d", year,
                     PyDateTime_GET_MONTH(when), PyDateTime_GET_DAY(when),
                     PyDateTime_DATE_GET_HOUR(when), PyDateTime_DATE_GET_MINUTE(when),
                     PyDateTime_DATE_GET_SECOND(when));
    if (micro) {
        n += snprintf(text + n, sizeof(text) - (size_t)n, ".%06d", micro);
    }
    text[n++] = 'Z';
    return PyUnicode_FromStringAndSize(text, n);
}

/* v5_text(digest): the UUIDv5 text of a SHA-1 digest (its first 16 bytes, version 5 and
 * the RFC 4122 variant set), as envelope/_ids.py _dashed_v5 writes it from the hex
 * digest: what uuid.UUID(bytes=digest[:16], version=5) prints. */
PyObject *
org_v5_text(PyObject *module, PyObject *digest)
{
    if (!PyBytes_Check(digest) || PyBytes_GET_SIZE(digest) < 16) {
        PyErr_SetString(PyExc_TypeError, "v5_text() takes a digest of at least 16 bytes");
        return NULL;
    }
    unsigned char b[16];
    memcpy(b, PyBytes_AS_STRING(digest), 16);
    b[6] = (unsigned char)((b[6] & 0x0F) | 0x50);
    b[8] = (unsigned char)((b[8] & 0x3F) | 0x80);
    char text[36];
    int at = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            text[at++] = '-';
        }
        text[at++] = HEX[b[i] >> 4];
        text[at++] = HEX[b[i] & 0xF];
    }
    return PyUnicode_FromStringAndSize(text, 36);
}
