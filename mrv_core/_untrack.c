/* Take immutable records of plain values out of the cyclic garbage collector's reach.
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
 * docs/compiled-path.md; the pure fallback (mrv_core/_records.py) does nothing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

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

static PyMethodDef untrack_methods[] = {
    {"untrack_atomic", untrack_atomic, METH_O,
     "untrack_atomic(objects: list) -> int: untrack the objects that refer to plain values only"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef untrack_module = {
    PyModuleDef_HEAD_INIT, "mrv_core._untrack",
    "Untracking immutable records of plain values from the cyclic GC.", -1, untrack_methods,
};

PyMODINIT_FUNC
PyInit__untrack(void)
{
    return PyModule_Create(&untrack_module);
}
