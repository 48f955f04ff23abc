/* The Python binding of the masker's C rules (masker_core.h): mask(bytes, int, int) -> bytes.
 *
 * masker.py is the reference; tests/patterns/test_masker_c.py holds the two equal.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "masker_core.h"

/* One scratch for the process: every call holds the GIL from start to end. */
static MaskScratch SCRATCH;

static PyObject *mask(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    /* Called per message: positional arguments read directly, no format string parsed. */
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "mask(message: bytes, max_tokens: int, max_length: int)");
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
                     (size_t)max_tokens, (size_t)max_length, &pattern, &length))
        PyErr_NoMemory();
    else
        result = PyBytes_FromStringAndSize(pattern, (Py_ssize_t)length);
    mask_scratch_trim(&SCRATCH);
    return result;
}

/* ---- A batch's patterns per group: mask_groups() ----
 *
 * What the frame counter (replaying/frames.py, through counting/record_patterns.py) did in
 * Python per distinct (group, message): look the message up, mask it, add its records to its
 * group's pattern and keep the smaller example. Here it is one call per batch: each distinct
 * message is masked once, each record costs two dict lookups and a table probe, and Python
 * objects are made per distinct (group, pattern) only, as the wire scanner's tally() does. */

/* What a message that masks to nothing counts as, and one absent (record_patterns.py and
 * structured.py name them; tests/patterns/test_mask_groups.py holds the two paths equal). */
#define GROUP_EMPTY_PATTERN "<empty>"
#define GROUP_NULL_PATTERN "<null>"

/* One distinct message: its pattern and its UTF-8 bytes (the examples' order). */
typedef struct {
    Py_ssize_t pattern;
    const char *text;
    Py_ssize_t length;
} GroupMessage;

/* One (group, pattern): its records and smallest message so far (a borrowed reference). */
typedef struct {
    Py_ssize_t group, pattern, records, example;
} GroupPattern;

typedef struct {
    PyObject *group_index;   /* key -> its index in group_keys */
    PyObject *group_keys;    /* the keys, in the order they came */
    PyObject *message_index; /* message str -> its index in messages */
    GroupMessage *messages;
    Py_ssize_t message_count;
    PyObject *pattern_index; /* pattern str -> its index in patterns */
    PyObject *patterns;      /* the pattern strs, in the order they came */
    PyObject *kept;          /* UTF-8 bytes made for strs with lone surrogates, kept alive */
    Buf last;                /* the last pattern found, as UTF-8 */
    Py_ssize_t last_index;   /* its index, or -1 */
    GroupPattern *entries;   /* in the order each (group, pattern) came */
    Py_ssize_t entry_count;
    Py_ssize_t *slots; /* open addressing over entries by (group, pattern); -1 is free */
    size_t slot_mask;
} GroupBatch;

static void group_batch_free(GroupBatch *b) {
    Py_XDECREF(b->group_index);
    Py_XDECREF(b->group_keys);
    Py_XDECREF(b->message_index);
    Py_XDECREF(b->pattern_index);
    Py_XDECREF(b->patterns);
    Py_XDECREF(b->kept);
    PyMem_Free(b->messages);
    PyMem_Free(b->entries);
    PyMem_Free(b->slots);
    free(b->last.data);
}

/* The index of `key` in `index` (a dict to PyLong), added to `order` as the next one if new;
 * -1 with an exception set on error. */
static Py_ssize_t index_of(PyObject *index, PyObject *order, PyObject *key) {
    PyObject *known = PyDict_GetItemWithError(index, key);
    if (known != NULL) return PyLong_AsSsize_t(known);
    if (PyErr_Occurred()) return -1;
    Py_ssize_t next = PyList_GET_SIZE(order);
    PyObject *number = PyLong_FromSsize_t(next);
    if (number == NULL) return -1;
    int failed = PyDict_SetItem(index, key, number) || PyList_Append(order, key);
    Py_DECREF(number);
    return failed ? -1 : next;
}

/* A str's UTF-8 bytes; a str with lone surrogates (surrogateescape) is encoded as masker.py
 * encodes it, surrogatepass, and its bytes kept in b->kept. */
static const char *utf8_of(GroupBatch *b, PyObject *text, Py_ssize_t *length) {
    const char *data = PyUnicode_AsUTF8AndSize(text, length);
    if (data != NULL || !PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return data;
    PyErr_Clear();
    PyObject *bytes = PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass");
    if (bytes == NULL) return NULL;
    int failed = PyList_Append(b->kept, bytes);
    Py_DECREF(bytes);
    if (failed) return NULL;
    *length = PyBytes_GET_SIZE(bytes);
    return PyBytes_AS_STRING(bytes);
}

/* The index of a pattern given as UTF-8 bytes; the last one found is tried first, since
 * distinct messages mostly share a few patterns. */
static Py_ssize_t pattern_of(GroupBatch *b, const char *text, size_t length) {
    if (b->last_index >= 0 && b->last.len == length && memcmp(b->last.data, text, length) == 0)
        return b->last_index;
    PyObject *pattern = PyUnicode_DecodeUTF8(text, (Py_ssize_t)length, "surrogatepass");
    if (pattern == NULL) return -1;
    Py_ssize_t index = index_of(b->pattern_index, b->patterns, pattern);
    Py_DECREF(pattern);
    if (index < 0) return -1;
    b->last.len = 0;
    if (buf_put(&b->last, text, length)) {
        PyErr_NoMemory();
        return -1;
    }
    b->last_index = index;
    return index;
}

/* The message's index among the batch's distinct messages, masked when first seen; None is
 * the message of a record without one. */
static Py_ssize_t message_of(GroupBatch *b, PyObject *message, size_t max_tokens,
                             size_t max_length) {
    PyObject *known = PyDict_GetItemWithError(b->message_index, message);
    if (known != NULL) return PyLong_AsSsize_t(known);
    if (PyErr_Occurred()) return -1;
    GroupMessage *m = &b->messages[b->message_count];
    const char *pattern;
    size_t pattern_length;
    if (message == Py_None) {
        m->text = "";
        m->length = 0;
        pattern = GROUP_NULL_PATTERN;
        pattern_length = sizeof GROUP_NULL_PATTERN - 1;
    } else if (PyUnicode_Check(message)) {
        m->text = utf8_of(b, message, &m->length);
        if (m->text == NULL) return -1;
        if (pattern_mask(&SCRATCH, m->text, (size_t)m->length, max_tokens, max_length, &pattern,
                         &pattern_length)) {
            PyErr_NoMemory();
            return -1;
        }
        if (pattern_length == 0) {
            pattern = GROUP_EMPTY_PATTERN;
            pattern_length = sizeof GROUP_EMPTY_PATTERN - 1;
        }
    } else {
        PyErr_Format(PyExc_TypeError, "a message is a str or None, not %.80s",
                     Py_TYPE(message)->tp_name);
        return -1;
    }
    m->pattern = pattern_of(b, pattern, pattern_length);
    if (m->pattern < 0) return -1;
    PyObject *number = PyLong_FromSsize_t(b->message_count);
    if (number == NULL) return -1;
    int failed = PyDict_SetItem(b->message_index, message, number);
    Py_DECREF(number);
    return failed ? -1 : b->message_count++;
}

static inline size_t group_pattern_slot(Py_ssize_t group, Py_ssize_t pattern, size_t mask) {
    uint64_t h = (uint64_t)group * 0x9E3779B97F4A7C15u ^ (uint64_t)pattern;
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9u;
    h ^= h >> 29;
    return (size_t)h & mask;
}

/* Adds one record of `message` (an index into b->messages) to its group's pattern:
 * records add up, and the example kept is the smaller by UTF-8 bytes, as PatternGroups does. */
static void add_record(GroupBatch *b, Py_ssize_t group, Py_ssize_t message) {
    const GroupMessage *m = &b->messages[message];
    size_t slot = group_pattern_slot(group, m->pattern, b->slot_mask);
    while (b->slots[slot] >= 0) {
        GroupPattern *e = &b->entries[b->slots[slot]];
        if (e->group == group && e->pattern == m->pattern) {
            e->records++;
            const GroupMessage *kept = &b->messages[e->example];
            if (e->example != message) {
                Py_ssize_t common = m->length < kept->length ? m->length : kept->length;
                int order = memcmp(m->text, kept->text, (size_t)common);
                if (order < 0 || (order == 0 && m->length < kept->length)) e->example = message;
            }
            return;
        }
        slot = (slot + 1) & b->slot_mask;
    }
    b->slots[slot] = b->entry_count;
    b->entries[b->entry_count++] = (GroupPattern){group, m->pattern, 1, message};
}

/* {key: [make(pattern, records, example), ...]} from the batch's tables. */
static PyObject *group_results(GroupBatch *b, PyObject *messages, const Py_ssize_t *first_at,
                               PyObject *make) {
    PyObject *result = PyDict_New();
    if (result == NULL) return NULL;
    Py_ssize_t groups = PyList_GET_SIZE(b->group_keys);
    for (Py_ssize_t g = 0; g < groups; g++) {
        PyObject *list = PyList_New(0);
        if (list == NULL || PyDict_SetItem(result, PyList_GET_ITEM(b->group_keys, g), list)) {
            Py_XDECREF(list);
            Py_DECREF(result);
            return NULL;
        }
        Py_DECREF(list); /* the dict holds it */
    }
    PyObject *empty = PyUnicode_FromStringAndSize("", 0);
    if (empty == NULL) goto failed;
    for (Py_ssize_t k = 0; k < b->entry_count; k++) {
        const GroupPattern *e = &b->entries[k];
        PyObject *example = PyTuple_GET_ITEM(messages, first_at[e->example]);
        PyObject *records = PyLong_FromSsize_t(e->records);
        if (records == NULL) goto failed;
        PyObject *args[3] = {PyList_GET_ITEM(b->patterns, e->pattern), records,
                             example == Py_None ? empty : example};
        PyObject *count = PyObject_Vectorcall(make, args, 3, NULL);
        Py_DECREF(records);
        PyObject *list = PyDict_GetItemWithError(result, PyList_GET_ITEM(b->group_keys, e->group));
        if (count == NULL || list == NULL || PyList_Append(list, count)) {
            Py_XDECREF(count);
            goto failed;
        }
        Py_DECREF(count);
    }
    Py_DECREF(empty);
    return result;
failed:
    Py_XDECREF(empty);
    Py_DECREF(result);
    return NULL;
}

static int group_batch_init(GroupBatch *b, Py_ssize_t count) {
    size_t slots = 16;
    while (slots < 2 * (size_t)count) slots <<= 1;
    b->group_index = PyDict_New();
    b->group_keys = PyList_New(0);
    b->message_index = PyDict_New();
    b->pattern_index = PyDict_New();
    b->patterns = PyList_New(0);
    b->kept = PyList_New(0);
    b->messages = PyMem_Malloc(((size_t)count + 1) * sizeof(GroupMessage));
    b->entries = PyMem_Malloc(((size_t)count + 1) * sizeof(GroupPattern));
    b->slots = PyMem_Malloc(slots * sizeof(Py_ssize_t));
    b->slot_mask = slots - 1;
    b->last_index = -1;
    if (b->group_index == NULL || b->group_keys == NULL || b->message_index == NULL ||
        b->pattern_index == NULL || b->patterns == NULL || b->kept == NULL) return -1;
    if (b->messages == NULL || b->entries == NULL || b->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(b->slots, 0xFF, slots * sizeof(Py_ssize_t));
    return 0;
}

/* The records' patterns per key, keys and messages in step (_masker.pyi says what is made). */
static PyObject *mask_groups_of(PyObject *keys, PyObject *messages, size_t max_tokens,
                                size_t max_length, PyObject *make) {
    Py_ssize_t count = PyTuple_GET_SIZE(keys);
    GroupBatch b = {0};
    PyObject *result = NULL;
    /* Where each distinct message first came: its example object, borrowed from `messages`. */
    Py_ssize_t *first_at = PyMem_Malloc(((size_t)count + 1) * sizeof(Py_ssize_t));
    if (first_at == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (group_batch_init(&b, count)) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t group = index_of(b.group_index, b.group_keys, PyTuple_GET_ITEM(keys, i));
        if (group < 0) goto done;
        Py_ssize_t known = b.message_count;
        Py_ssize_t message =
            message_of(&b, PyTuple_GET_ITEM(messages, i), max_tokens, max_length);
        if (message < 0) goto done;
        if (message == known) first_at[message] = i;
        add_record(&b, group, message);
    }
    result = group_results(&b, messages, first_at, make);
done:
    mask_scratch_trim(&SCRATCH);
    PyMem_Free(first_at);
    group_batch_free(&b);
    return result;
}

static PyObject *mask_groups(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "mask_groups(keys, messages, max_tokens, max_length, "
                                         "make)");
        return NULL;
    }
    Py_ssize_t max_tokens = PyLong_AsSsize_t(args[2]);
    Py_ssize_t max_length = PyLong_AsSsize_t(args[3]);
    if ((max_tokens == -1 || max_length == -1) && PyErr_Occurred()) return NULL;
    if (max_tokens < 1 || max_length < MASK_LEN) {
        PyErr_SetString(PyExc_ValueError, "max_tokens must be at least 1 and max_length at least 3");
        return NULL;
    }
    /* Tuples: what is read stays as it is, whatever a key's __hash__ or __eq__ does. */
    PyObject *keys = PySequence_Tuple(args[0]);
    PyObject *messages = keys == NULL ? NULL : PySequence_Tuple(args[1]);
    PyObject *result = NULL;
    if (messages != NULL && PyTuple_GET_SIZE(keys) != PyTuple_GET_SIZE(messages))
        PyErr_SetString(PyExc_ValueError, "keys and messages differ in length");
    else if (messages != NULL)
        result = mask_groups_of(keys, messages, (size_t)max_tokens, (size_t)max_length, args[4]);
    Py_XDECREF(keys);
    Py_XDECREF(messages);
    return result;
}

static PyMethodDef METHODS[] = {
    {"mask", (PyCFunction)(void (*)(void))mask, METH_FASTCALL,
     "mask(message: bytes, max_tokens: int, max_length: int) -> bytes: the built-in masks."},
    {"mask_groups", (PyCFunction)(void (*)(void))mask_groups, METH_FASTCALL,
     "mask_groups(keys, messages, max_tokens, max_length, make) -> {key: [make(pattern, "
     "records, example)]}: a batch's patterns per key."},
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
