/* Compiled helpers of the records (mrv_core): untracking plain records from the cyclic GC,
 * and building a Modbus read's readings from its decoded values.
 *
 * 1. untrack_atomic: take immutable records of plain values out of the collector's reach.
 *
 * A poll at 2,000 devices makes 60,000 `Reading`s a second, and the commit as many committed
 * copies and row tuples; all of them are tracked by the cyclic GC, so every young-generation
 * collection walked tens of thousands of them (10-20 ms of CPU each, several a second, and a
 * pause on the event loop). A `Reading` holds only str, int, float and None: it can never be
 * part of a reference cycle, so the collector has nothing to find in it.
 *
 * untrack_atomic(objects) -> int: for each object of the list that is an exact tuple or an
 * instance of a class with __slots__ and no __dict__, is tracked, and whose every referent (as
 * its type's tp_traverse reports them, its own class aside) is an exact str, int, bool, float,
 * bytes or None, untrack it. Objects holding anything else stay tracked. Returns how many were untracked.
 * This is only safe for objects that are not changed afterwards to hold a container (frozen
 * records); an object that did would leak a cycle through it, never corrupt memory.
 * docs/compiled-path.md; the pure fallback (mrv_core/_gc.py) does nothing.
 *
 * 2. block_readings(out, fast, values, ts_ns, source, sentinel_quality, reading_type) -> bool:
 * the readings of one Modbus read decoded by one struct (drivers/modbus/_io.py), appended to
 * the list `out`, exactly as the Python loop there makes them:
 *
 *     for (pid, unit, scale, add, sent), v in zip(fast, values, strict=True):
 *         if v != v or v == sent:   -> Reading(pid, ts_ns, nan, unit, source, sentinel_quality)
 *         else:                     -> Reading(pid, ts_ns, v * scale + add, unit, source)
 *
 * (seq 0, gateway_id ""), each untracked as above. It handles only the usual shapes: `fast` a
 * tuple of 5-tuples (str, str, float, float, None or int), `values` a tuple of exact ints
 * within 64 bits and floats of the same length, `ts_ns` an exact int, `source` and the ids
 * exact str, `reading_type` a slotted class with the Reading fields. For anything else it
 * returns False having appended nothing, and the caller runs the Python loop (which then
 * gives its own result or error). v * scale + add is computed in two roundings as Python does
 * (no fused multiply-add: -ffp-contract=off, and the product is stored first).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include "_slots.h"

static int
atomic_visit(PyObject *o, void *arg)
{
    PyTypeObject *t = Py_TYPE(o);
    if (o == arg) /* a heap type's instance reports its type too */
        return 0;
    if (t == &PyUnicode_Type || t == &PyLong_Type || t == &PyFloat_Type || t == &PyBool_Type ||
        t == &PyBytes_Type || o == Py_None)
        return 0;
    return 1; /* stops the traversal: this object keeps its tracking */
}

static PyObject *
untrack_atomic(PyObject *self, PyObject *objects)
{
    Py_ssize_t i, n, done = 0;
    (void)self;
    if (!PyList_Check(objects)) {
        PyErr_SetString(PyExc_TypeError, "untrack_atomic: a list is required");
        return NULL;
    }
    n = PyList_GET_SIZE(objects);
    for (i = 0; i < n; i++) {
        PyObject *o = PyList_GET_ITEM(objects, i);
        PyTypeObject *t = Py_TYPE(o);
        traverseproc trav = t->tp_traverse;
        /* immutable kinds only: exact tuples, and instances of classes with __slots__ and no
         * __dict__ (the frozen record dataclasses); never lists, dicts, sets */
        int kind = t == &PyTuple_Type ||
                   ((t->tp_flags & Py_TPFLAGS_HEAPTYPE) && t->tp_dictoffset == 0);
        if (!kind || !PyObject_IS_GC(o) || !PyObject_GC_IsTracked(o) || trav == NULL)
            continue;
        if (trav(o, atomic_visit, (void *)t) != 0)
            continue;
        PyObject_GC_UnTrack(o);
        done++;
    }
    return PyLong_FromSsize_t(done);
}

/* ------------------------------------------------------------------ block_readings */

static PyTypeObject *reading_type = NULL; /* the type the offsets below belong to */
static Py_ssize_t field_offset[N_FIELDS];
static PyObject *zero = NULL, *empty = NULL, *nan_obj = NULL;

/* The slot offsets of `type` (mrv_core/_slots.h). 1: usable; 0: not a Reading-shaped type
 * (never the fast path for it); -1: error. */
static int
learn_type(PyObject *type)
{
    return learn_type_into(type, &reading_type, field_offset);
}

#define SLOT(obj, f) (*(PyObject **)((char *)(obj) + offs[f]))

static PyObject *
block_readings(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *out, *fast, *values, *ts, *source, *squal, *type;
    PyTypeObject *rt;
    Py_ssize_t offs[N_FIELDS];
    Py_ssize_t i, n, start;
    (void)self;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "block_readings takes 7 arguments");
        return NULL;
    }
    out = args[0]; fast = args[1]; values = args[2]; ts = args[3]; source = args[4];
    squal = args[5]; type = args[6];
    if (!PyList_Check(out) || !PyTuple_CheckExact(fast) || !PyTuple_CheckExact(values) ||
        !PyLong_CheckExact(ts) || !PyUnicode_CheckExact(source) || !PyLong_CheckExact(squal))
        Py_RETURN_FALSE;
    if ((PyObject *)reading_type != type) {
        int known = learn_type(type);
        if (known < 0)
            return NULL;
        if (known == 0)
            Py_RETURN_FALSE;
    }
    rt = reading_type;
    memcpy(offs, field_offset, sizeof offs);
    n = PyTuple_GET_SIZE(fast);
    if (PyTuple_GET_SIZE(values) != n)
        Py_RETURN_FALSE; /* the Python loop raises its own error */
    /* pass 1: every shape as expected, or nothing is done here */
    for (i = 0; i < n; i++) {
        PyObject *f = PyTuple_GET_ITEM(fast, i), *v = PyTuple_GET_ITEM(values, i), *sent;
        if (!PyTuple_CheckExact(f) || PyTuple_GET_SIZE(f) != 5 ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(f, 0)) ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(f, 1)) ||
            !PyFloat_CheckExact(PyTuple_GET_ITEM(f, 2)) ||
            !PyFloat_CheckExact(PyTuple_GET_ITEM(f, 3)))
            Py_RETURN_FALSE;
        sent = PyTuple_GET_ITEM(f, 4);
        if (sent != Py_None && !PyLong_CheckExact(sent))
            Py_RETURN_FALSE;
        if (PyLong_CheckExact(v)) {
            int overflow;
            (void)PyLong_AsLongLongAndOverflow(v, &overflow);
            if (overflow) { /* beyond int64 (a uint64 register): exact int to float below */
                unsigned long long u = PyLong_AsUnsignedLongLong(v);
                if (u == (unsigned long long)-1 && PyErr_Occurred()) {
                    PyErr_Clear();
                    Py_RETURN_FALSE;
                }
            }
        } else if (!PyFloat_CheckExact(v)) {
            Py_RETURN_FALSE;
        }
    }
    /* pass 2: the readings */
    start = PyList_GET_SIZE(out);
    for (i = 0; i < n; i++) {
        PyObject *f = PyTuple_GET_ITEM(fast, i), *v = PyTuple_GET_ITEM(values, i);
        PyObject *sent = PyTuple_GET_ITEM(f, 4), *value, *quality, *r;
        int flagged;
        if (PyFloat_CheckExact(v)) {
            double d = PyFloat_AS_DOUBLE(v);
            flagged = d != d;
            if (!flagged && sent != Py_None) { /* float == int: Python's exact comparison */
                flagged = PyObject_RichCompareBool(v, sent, Py_EQ);
                if (flagged < 0)
                    goto error;
            }
        } else {
            flagged = sent != Py_None ? PyObject_RichCompareBool(v, sent, Py_EQ) : 0;
            if (flagged < 0)
                goto error;
        }
        if (flagged) {
            value = Py_NewRef(nan_obj);
            quality = Py_NewRef(squal);
        } else {
            volatile double product; /* rounded on its own, as Python rounds v * scale */
            double x = PyFloat_CheckExact(v) ? PyFloat_AS_DOUBLE(v) : PyLong_AsDouble(v);
            if (x == -1.0 && PyErr_Occurred())
                goto error;
            product = x * PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(f, 2));
            value = PyFloat_FromDouble(product + PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(f, 3)));
            if (value == NULL)
                goto error;
            quality = Py_NewRef(zero);
        }
        r = rt->tp_alloc(rt, 0);
        if (r == NULL) {
            Py_DECREF(value);
            Py_DECREF(quality);
            goto error;
        }
        SLOT(r, F_POINT) = Py_NewRef(PyTuple_GET_ITEM(f, 0));
        SLOT(r, F_TS) = Py_NewRef(ts);
        SLOT(r, F_VALUE) = value;
        SLOT(r, F_UNIT) = Py_NewRef(PyTuple_GET_ITEM(f, 1));
        SLOT(r, F_SOURCE) = Py_NewRef(source);
        SLOT(r, F_QUALITY) = quality;
        SLOT(r, F_SEQ) = Py_NewRef(zero);
        SLOT(r, F_GW) = Py_NewRef(empty);
        PyObject_GC_UnTrack(r); /* plain values only (checked above) */
        if (PyList_Append(out, r) < 0) {
            Py_DECREF(r);
            goto error;
        }
        Py_DECREF(r);
    }
    Py_RETURN_TRUE;
error:
    /* leave `out` as it was: nothing of this call half done */
    if (PyList_GET_SIZE(out) > start)
        PyList_SetSlice(out, start, PyList_GET_SIZE(out), NULL);
    return NULL;
}

static PyMethodDef recordc_methods[] = {
    {"untrack_atomic", untrack_atomic, METH_O,
     "untrack_atomic(objects: list) -> int: untrack the objects that refer to plain values only"},
    {"block_readings", (PyCFunction)(void (*)(void))block_readings, METH_FASTCALL,
     "block_readings(out, fast, values, ts_ns, source, sentinel_quality, reading_type) -> bool"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef recordc_module = {
    PyModuleDef_HEAD_INIT, "mrv_core._recordc",
    "Compiled helpers of the records: GC untracking, a Modbus read's readings.", -1,
    recordc_methods,
};

PyMODINIT_FUNC
PyInit__recordc(void)
{
    zero = PyLong_FromLong(0);
    empty = PyUnicode_New(0, 0);
    nan_obj = PyFloat_FromDouble(Py_NAN);
    if (zero == NULL || empty == NULL || nan_obj == NULL)
        return NULL;
    return PyModule_Create(&recordc_module);
}
