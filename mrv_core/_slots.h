/* The slots of the record class `mrv_core.Reading`, as the compiled hot paths find them:
 * included by mrv_core/_recordc.c and ledger_client/_leafc.c (docs/compiled-path.md).
 *
 * Each including module keeps its own `reading_type` and offsets; `learn_type_into` fills them
 * from the class's member descriptors. The offsets are a C struct's layout, learned at run time
 * and never assumed: a class of another shape is never taken for a Reading. */
#ifndef MRV_SLOTS_H
#define MRV_SLOTS_H

#include <Python.h>
#include <structmember.h>
#include <string.h>

/* The slots of the Reading class, by the order of the record fields. */
enum { F_POINT, F_TS, F_VALUE, F_UNIT, F_SOURCE, F_QUALITY, F_SEQ, F_GW, N_FIELDS };
static const char *const FIELD_NAMES[N_FIELDS] = {
    "point_id", "ts_ns", "value", "unit", "source", "quality", "seq", "gateway_id"};

/* The offsets of the object slots `names` of `type`, each a writable T_OBJECT_EX member of
 * `type` itself (no __dict__), into offs. 1: found; 0: not a type of that shape; -1: error.
 * Also used for other slotted classes (cleaning/_cleanc.c, the `PointCleaner`). */
static int
learn_slots(PyObject *type, const char *const *names, int n, Py_ssize_t *offs)
{
    int i;
    if (!PyType_Check(type) || ((PyTypeObject *)type)->tp_dictoffset != 0)
        return 0;
    for (i = 0; i < n; i++) {
        PyObject *d = PyObject_GetAttrString(type, names[i]);
        PyMemberDef *mdef;
        if (d == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                return -1;
            PyErr_Clear();
            return 0;
        }
        if (!Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            Py_DECREF(d);
            return 0;
        }
        mdef = ((PyMemberDescrObject *)d)->d_member;
        if (mdef->type != T_OBJECT_EX || (mdef->flags & READONLY) ||
            ((PyMemberDescrObject *)d)->d_common.d_type != (PyTypeObject *)type) {
            Py_DECREF(d);
            return 0;
        }
        offs[i] = mdef->offset;
        Py_DECREF(d);
    }
    return 1;
}

/* Learn the slot offsets of `type` from its member descriptors into *rt and offsets (the
 * offsets first, then the type they fit). 1: usable; 0: not a type of the expected shape
 * (never the fast path for it: no __dict__, every field a writable object slot of `type`
 * itself); -1: error. */
static int
learn_type_into(PyObject *type, PyTypeObject **rt, Py_ssize_t offsets[N_FIELDS])
{
    Py_ssize_t off[N_FIELDS];
    int ok = learn_slots(type, FIELD_NAMES, N_FIELDS, off);
    if (ok <= 0)
        return ok;
    {
        PyTypeObject *old = *rt;
        memcpy(offsets, off, sizeof off);
        *rt = (PyTypeObject *)Py_NewRef(type);
        Py_XDECREF(old);
    }
    return 1;
}

#endif /* MRV_SLOTS_H */
