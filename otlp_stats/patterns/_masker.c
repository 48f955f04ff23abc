/* The Python binding of the masker's C rules (masker_core.h):
 * mask(bytes, int, int) -> bytes, and mask_cuts(bytes, int, int) -> (bytes, cuts).
 *
 * masker.py is the reference; tests/patterns/test_masker_c.py holds the two equal.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "masker_core.h"

/* One scratch for the process: every call holds the GIL from start to end. */
static MaskScratch SCRATCH;

/* The pattern of args[0] within the bounds args[1] and args[2], as bytes; NULL with an
 * exception set. *cuts: the bounds it was cut at (CUT_TOKENS, CUT_LENGTH). */
static PyObject *mask_args(PyObject *const *args, Py_ssize_t nargs, const char *usage, int *cuts) {
    /* Called per message: positional arguments read directly, no format string parsed. */
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, usage);
        return NULL;
    }
    Py_ssize_t max_tokens = PyLong_AsSsize_t(args[1]);
    Py_ssize_t max_length = PyLong_AsSsize_t(args[2]);
    if ((max_tokens == -1 || max_length == -1) && PyErr_Occurred()) return NULL;
    if (max_tokens < 1 || max_length < MASK_LEN) {
        PyErr_SetString(PyExc_ValueError, "max_tokens must be at least 1 and max_length at least 3");
        return NULL;
    }
    const char *pattern;
    size_t length;
    PyObject *result = NULL;
    if (pattern_mask(&SCRATCH, PyBytes_AS_STRING(args[0]), (size_t)PyBytes_GET_SIZE(args[0]),
                     (size_t)max_tokens, (size_t)max_length, &pattern, &length, cuts))
        PyErr_NoMemory();
    else
        result = PyBytes_FromStringAndSize(pattern, (Py_ssize_t)length);
    mask_scratch_trim(&SCRATCH);
    return result;
}

static PyObject *mask(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    int cuts;
    return mask_args(args, nargs, "mask(message: bytes, max_tokens: int, max_length: int)", &cuts);
}

static PyObject *mask_cuts(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    int cuts = 0;
    PyObject *pattern =
        mask_args(args, nargs, "mask_cuts(message: bytes, max_tokens: int, max_length: int)", &cuts);
    if (pattern == NULL) return NULL;
    PyObject *result = Py_BuildValue("(Ni)", pattern, cuts);
    return result;
}

static PyMethodDef METHODS[] = {
    {"mask", (PyCFunction)(void (*)(void))mask, METH_FASTCALL,
     "mask(message: bytes, max_tokens: int, max_length: int) -> bytes: the built-in masks."},
    {"mask_cuts", (PyCFunction)(void (*)(void))mask_cuts, METH_FASTCALL,
     "mask_cuts(message: bytes, max_tokens: int, max_length: int) -> tuple[bytes, int]: mask's\n"
     "pattern, and the bounds it was cut at (1: max_tokens, 2: max_length, 3: both, 0: none)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "otlp_stats.patterns._masker", "The masker's built-in rules in C.", -1,
    METHODS, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__masker(void) {
    masker_init();
    return PyModule_Create(&MODULE);
}
