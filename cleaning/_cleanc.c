/* The compiled scalar path of `cleaning.Cleaner.clean` (docs/compiled-path.md, design 008).
 *
 * clean_scalar(readings, points, now_ns, skip) runs, one reading at a time in the input order,
 * the checks that need no window: sentinels, range, timestamps and the duplicate reading. It
 * reads and writes the same trailing state as `PointCleaner._step` (the slots `_max_ts` and
 * `_dup_prev` of the point's `PointCleaner`), so a point may take this path, `_step` or the
 * numpy path from one chunk to the next. It leaves to Python (the indexes it returns as
 * "deferred", in order) every reading it cannot take exactly as `_step` would: a point with a
 * value check (rate of change, spike, flatline, counter), a field that is not a plain int or
 * float in range, state or config of another shape; once a point's reading is deferred, that
 * point's later readings in the call are too, so each point keeps its order.
 *
 * The flags are `_step`'s, in the same order, with the same float64 and int64 arithmetic:
 *   sentinel  v == s (tolerance None) or |v - s| <= tolerance, for any configured s;
 *   range     v < min or v > max (NaN never);
 *   future    t > now + max_future (clamped to int64); stale t < now - max_age (clamped);
 *   ts dup / non-monotonic   t == m / t < m, m the largest earlier timestamp not in the future;
 *   duplicate t and v as the previous reading's (NaN equal to NaN): replaces ts dup.
 * tests/test_cleanc.py checks that both paths give the same flags and leave the same state.
 *
 * configure(reading_type, cleaner_type, flags) learns the slot offsets of both classes from
 * their member descriptors (`learn_slots`, mrv_core/_slots.h) and the flag bits from Python;
 * until it has succeeded, clean_scalar returns None and Python does all the work. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

#include "../mrv_core/_slots.h"

static PyTypeObject *reading_type = NULL;
static Py_ssize_t r_off[N_FIELDS];

enum { C_SENT, C_LO, C_HI, C_FUT, C_AGE, C_DUPS, C_VALUE_CHECKS, C_MAX_TS, C_DUP_PREV, N_CF };
static const char *const CF_NAMES[N_CF] = {
    "_sentinels", "_range_min", "_range_max", "_ts_future_ns", "_ts_age_ns", "_dups",
    "_value_checks", "_max_ts", "_dup_prev"};
static PyTypeObject *cleaner_type = NULL;
static Py_ssize_t c_off[N_CF];

enum { FL_SENT, FL_RANGE, FL_FUT, FL_STALE, FL_TSDUP, FL_NONMONO, FL_DUP, N_FL };
static uint64_t flag[N_FL];

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static PyObject *
cleanc_configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t roffs[N_FIELDS], coffs[N_CF];
    PyTypeObject *rt = NULL;
    uint64_t fl[N_FL];
    int ok, i;
    if (nargs != 3 || !PyTuple_CheckExact(args[2]) || PyTuple_GET_SIZE(args[2]) != N_FL) {
        PyErr_SetString(PyExc_TypeError,
                        "configure(reading_type, cleaner_type, flags: tuple of 7 ints)");
        return NULL;
    }
    for (i = 0; i < N_FL; i++) {
        PyObject *f = PyTuple_GET_ITEM(args[2], i);
        unsigned long long x;
        if (!PyLong_CheckExact(f)) {
            PyErr_SetString(PyExc_TypeError, "the flags must be ints");
            return NULL;
        }
        x = PyLong_AsUnsignedLongLong(f);
        if (x == (unsigned long long)-1 && PyErr_Occurred())
            return NULL;
        if (x == 0 || x > 0xFFFFFFFFULL) {
            PyErr_SetString(PyExc_ValueError, "a flag is a nonzero uint32");
            return NULL;
        }
        fl[i] = x;
    }
    ok = learn_type_into(args[0], &rt, roffs);
    if (ok <= 0) {
        Py_XDECREF(rt);
        return ok < 0 ? NULL : Py_NewRef(Py_False);
    }
    ok = learn_slots(args[1], CF_NAMES, N_CF, coffs);
    if (ok <= 0) {
        Py_DECREF(rt);
        return ok < 0 ? NULL : Py_NewRef(Py_False);
    }
    Py_XSETREF(reading_type, rt);
    Py_XSETREF(cleaner_type, (PyTypeObject *)Py_NewRef(args[1]));
    memcpy(r_off, roffs, sizeof r_off);
    memcpy(c_off, coffs, sizeof c_off);
    memcpy(flag, fl, sizeof flag);
    return Py_NewRef(Py_True);
}

/* x as an int64 when it is an exact int in range: 1; otherwise 0 (no error set). */
static int
as_i64(PyObject *x, int64_t *out)
{
    int overflow;
    long long v;
    if (!PyLong_CheckExact(x))
        return 0;
    v = PyLong_AsLongLongAndOverflow(x, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *out = (int64_t)v;
    return 1;
}

/* a + b and a - b clamped to int64, as `ts_limits` clamps them */
static int64_t
sat_add(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b)
        return INT64_MIN;
    return a + b;
}

static int64_t
sat_sub(int64_t a, int64_t b)
{
    if (b < 0 && a > INT64_MAX + b)
        return INT64_MAX;
    if (b > 0 && a < INT64_MIN + b)
        return INT64_MIN;
    return a - b;
}

/* A float, or None (*has = 0): 1; anything else: 0. */
static int
opt_float(PyObject *x, double *out, int *has)
{
    if (x == Py_None) {
        *has = 0;
        return 1;
    }
    if (!PyFloat_CheckExact(x))
        return 0;
    *out = PyFloat_AS_DOUBLE(x);
    *has = 1;
    return 1;
}

static int
opt_i64(PyObject *x, int64_t *out, int *has)
{
    if (x == Py_None) {
        *has = 0;
        return 1;
    }
    *has = 1;
    return as_i64(x, out);
}

/* The flags of one reading (t, v, q) of point pc, updating its state, as `_step` does. 1:
 * done (*out set); 0: not taken (nothing changed: Python takes it); -1: error. */
static int
step(PyObject *pc, PyObject *t_obj, PyObject *v_obj, int64_t t, double v, uint64_t q,
     int64_t now, uint64_t *out_q)
{
    PyObject *sent = SLOT(pc, c_off[C_SENT]), *dups = SLOT(pc, c_off[C_DUPS]);
    PyObject *vc = SLOT(pc, c_off[C_VALUE_CHECKS]), *mts = SLOT(pc, c_off[C_MAX_TS]);
    PyObject *prev = SLOT(pc, c_off[C_DUP_PREV]), *fut_o = SLOT(pc, c_off[C_FUT]);
    PyObject *age_o = SLOT(pc, c_off[C_AGE]);
    PyObject *lo_o = SLOT(pc, c_off[C_LO]), *hi_o = SLOT(pc, c_off[C_HI]);
    double lo = 0, hi = 0, pv = 0;
    int64_t fut = 0, age = 0, m = 0, pt = 0;
    int has_lo, has_hi, has_fut, has_age, has_m, has_p, dup_on;
    uint64_t out = q;
    Py_ssize_t i, ns;

    /* everything read and checked before anything is changed */
    if (sent == NULL || dups == NULL || vc == NULL || mts == NULL || prev == NULL ||
        fut_o == NULL || age_o == NULL || lo_o == NULL || hi_o == NULL)
        return 0;
    if (vc != Py_False || (dups != Py_True && dups != Py_False) || !PyTuple_CheckExact(sent))
        return 0;
    dup_on = dups == Py_True;
    if (!opt_float(lo_o, &lo, &has_lo) || !opt_float(hi_o, &hi, &has_hi) ||
        !opt_i64(fut_o, &fut, &has_fut) || !opt_i64(age_o, &age, &has_age) ||
        !opt_i64(mts, &m, &has_m))
        return 0;
    if (prev == Py_None) {
        has_p = 0;
    } else {
        if (!PyTuple_CheckExact(prev) || PyTuple_GET_SIZE(prev) != 2 ||
            !as_i64(PyTuple_GET_ITEM(prev, 0), &pt) ||
            !PyFloat_CheckExact(PyTuple_GET_ITEM(prev, 1)))
            return 0;
        pv = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(prev, 1));
        has_p = 1;
    }
    ns = PyTuple_GET_SIZE(sent);
    for (i = 0; i < ns; i++) {
        PyObject *e = PyTuple_GET_ITEM(sent, i), *s, *tol;
        if (!PyTuple_CheckExact(e) || PyTuple_GET_SIZE(e) != 2)
            return 0;
        s = PyTuple_GET_ITEM(e, 0);
        tol = PyTuple_GET_ITEM(e, 1);
        if (!PyFloat_CheckExact(s) || (tol != Py_None && !PyFloat_CheckExact(tol)))
            return 0;
    }

    for (i = 0; i < ns; i++) { /* sentinels */
        PyObject *e = PyTuple_GET_ITEM(sent, i), *tol = PyTuple_GET_ITEM(e, 1);
        double s = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(e, 0));
        if (tol == Py_None ? v == s : fabs(v - s) <= PyFloat_AS_DOUBLE(tol)) {
            out |= flag[FL_SENT];
            break;
        }
    }
    if ((has_lo && v < lo) || (has_hi && v > hi)) /* range */
        out |= flag[FL_RANGE];
    if (has_fut) { /* timestamps */
        int64_t future_limit = sat_add(now, fut);
        int future = t > future_limit;
        if (future)
            out |= flag[FL_FUT];
        if (has_age && t < sat_sub(now, age))
            out |= flag[FL_STALE];
        if (has_m) {
            if (t == m)
                out |= flag[FL_TSDUP];
            else if (t < m)
                out |= flag[FL_NONMONO];
        }
        if (!future && (!has_m || t > m)) {
            PyObject *old = mts;
            SLOT(pc, c_off[C_MAX_TS]) = Py_NewRef(t_obj);
            Py_DECREF(old);
        }
    }
    if (dup_on) { /* the duplicate reading */
        PyObject *np;
        if (has_p && t == pt && (v == pv || (v != v && pv != pv)))
            out = (out & ~flag[FL_TSDUP]) | flag[FL_DUP];
        np = PyTuple_Pack(2, t_obj, v_obj);
        if (np == NULL)
            return -1;
        SLOT(pc, c_off[C_DUP_PREV]) = np;
        Py_DECREF(prev);
    }
    *out_q = out;
    return 1;
}

static PyObject *
cleanc_clean_scalar(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *readings, *points, *skip, *changes = NULL, *deferred = NULL, *held = NULL;
    PyObject *dpids = NULL; /* the points deferred so far (a set, made at the first) */
    Py_ssize_t n, i;
    int64_t now;
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "clean_scalar(readings: list, points: dict, now_ns: int, skip)");
        return NULL;
    }
    readings = args[0];
    points = args[1];
    skip = args[3];
    if (reading_type == NULL || cleaner_type == NULL || !as_i64(args[2], &now))
        Py_RETURN_NONE;
    if (skip != Py_None && !PyAnySet_CheckExact(skip))
        Py_RETURN_NONE;
    n = PyList_GET_SIZE(readings);
    for (i = 0; i < n; i++) { /* every reading a Reading with a str point id, or none taken */
        PyObject *r = PyList_GET_ITEM(readings, i), *pid;
        if (Py_TYPE(r) != reading_type)
            Py_RETURN_NONE;
        pid = SLOT(r, r_off[F_POINT]);
        if (pid == NULL || !PyUnicode_CheckExact(pid))
            Py_RETURN_NONE;
    }
    changes = PyList_New(0);
    deferred = PyList_New(0);
    if (changes == NULL || deferred == NULL)
        goto error;
    /* the list may not change under us: nothing below runs Python code, but hold it anyway */
    held = Py_NewRef(readings);
    for (i = 0; i < n; i++) {
        PyObject *r = PyList_GET_ITEM(readings, i);
        PyObject *pid = SLOT(r, r_off[F_POINT]), *pc, *t_obj, *v_obj, *q_obj;
        int64_t t, qq;
        uint64_t out;
        int rc;
        pc = PyDict_GetItemWithError(points, pid);
        if (pc == NULL) {
            if (PyErr_Occurred())
                goto error;
            continue; /* no checks */
        }
        if (skip != Py_None) {
            rc = PySet_Contains(skip, pid);
            if (rc < 0)
                goto error;
            if (rc)
                continue; /* the numpy path's */
        }
        t_obj = SLOT(r, r_off[F_TS]);
        v_obj = SLOT(r, r_off[F_VALUE]);
        q_obj = SLOT(r, r_off[F_QUALITY]);
        rc = 0;
        if (Py_TYPE(pc) == cleaner_type && t_obj != NULL && v_obj != NULL && q_obj != NULL &&
            PyFloat_CheckExact(v_obj) && as_i64(t_obj, &t) && as_i64(q_obj, &qq) &&
            qq >= 0 && qq <= 0xFFFFFFFFLL) {
            if (dpids != NULL) { /* a point deferred before keeps its order */
                rc = PySet_Contains(dpids, pid);
                if (rc < 0)
                    goto error;
                rc = rc ? -2 : 0;
            }
            if (rc == 0)
                rc = step(pc, t_obj, v_obj, t, PyFloat_AS_DOUBLE(v_obj), (uint64_t)qq, now, &out);
        }
        if (rc == -1)
            goto error;
        if (rc == 1) {
            if (out != (uint64_t)qq) {
                PyObject *c = Py_BuildValue("(nK)", i, (unsigned long long)out);
                if (c == NULL || PyList_Append(changes, c) < 0) {
                    Py_XDECREF(c);
                    goto error;
                }
                Py_DECREF(c);
            }
        } else { /* 0 or -2: Python takes it */
            PyObject *ix = PyLong_FromSsize_t(i);
            if (ix == NULL || PyList_Append(deferred, ix) < 0) {
                Py_XDECREF(ix);
                goto error;
            }
            Py_DECREF(ix);
            if (dpids == NULL && (dpids = PySet_New(NULL)) == NULL)
                goto error;
            if (PySet_Add(dpids, pid) < 0)
                goto error;
        }
    }
    Py_DECREF(held);
    Py_XDECREF(dpids);
    return Py_BuildValue("(NN)", changes, deferred);
error:
    Py_XDECREF(held);
    Py_XDECREF(dpids);
    Py_XDECREF(changes);
    Py_XDECREF(deferred);
    return NULL;
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))cleanc_configure, METH_FASTCALL,
     "configure(reading_type, cleaner_type, flags) -> True when both classes have the shape "
     "the compiled path reads (their slots); flags: the bits of sentinel, range, future, "
     "stale, ts duplicate, non-monotonic, duplicate"},
    {"clean_scalar", (PyCFunction)(void (*)(void))cleanc_clean_scalar, METH_FASTCALL,
     "clean_scalar(readings, points, now_ns, skip) -> (changes, deferred) or None: the "
     "checks without a window on each reading, as PointCleaner._step; changes: (index, new "
     "quality) where it changed; deferred: the indexes Python must take, in order"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "cleaning._cleanc",
    "The compiled scalar path of cleaning.Cleaner.clean (docs/compiled-path.md).", -1, methods,
};

PyMODINIT_FUNC
PyInit__cleanc(void)
{
    return PyModule_Create(&moduledef);
}
