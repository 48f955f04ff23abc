/* The Python binding of the masker's C rules (masker_core.h):
 * mask(bytes, int, int) -> bytes, and mask_cuts(bytes, int, int) -> (bytes, cuts).
 *
 * masker.py is the reference; tests/patterns/test_masker_c.py holds the two equal.
 * mask_groups() (below mask) masks a whole batch of messages per key in one call.
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

/* ---- A batch's patterns per key: mask_groups() ----
 *
 * What the frame counter (replaying/frames.py, through counting/record_patterns.py) did in
 * Python per distinct (key, message): look the message up, mask it, add its records to its
 * key's pattern and keep the smaller example. Here it is one call per batch: each distinct
 * message is masked once, a record costs two probes of tables of its own (no tuple, no int
 * made per record), and Python objects are made per distinct key and (key, pattern) only, as
 * the wire scanner's tally() does. */

/* What a message that masks to nothing counts as, and one absent (record_patterns.py and
 * structured.py name them; tests/patterns/test_mask_groups.py holds the two paths equal). */
#define GROUP_EMPTY_PATTERN "<empty>"
#define GROUP_NULL_PATTERN "<null>"

/* The distinct keys of a batch's records, a record's key being its values in `columns` (one
 * tuple per column, a value per record): open addressing by the values' combined hash, and
 * compared with ==, as a dict of tuples would, without making the tuples. */
typedef struct {
    PyObject *const *columns;
    Py_ssize_t width;
    Py_ssize_t *first; /* per key: the first record that has it */
    Py_hash_t *hashes; /* per key */
    Py_ssize_t count;
    Py_ssize_t *slots; /* a key's index, or -1 */
    size_t mask;
} KeyTable;

static int key_table_init(KeyTable *t, PyObject *const *columns, Py_ssize_t width,
                          Py_ssize_t records) {
    size_t slots = 16;
    while (slots < 2 * (size_t)records) slots <<= 1;
    *t = (KeyTable){columns, width, NULL, NULL, 0, NULL, slots - 1};
    t->first = PyMem_Malloc(((size_t)records + 1) * sizeof(Py_ssize_t));
    t->hashes = PyMem_Malloc(((size_t)records + 1) * sizeof(Py_hash_t));
    t->slots = PyMem_Malloc(slots * sizeof(Py_ssize_t));
    if (t->first == NULL || t->hashes == NULL || t->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(t->slots, 0xFF, slots * sizeof(Py_ssize_t));
    return 0;
}

static void key_table_free(KeyTable *t) {
    PyMem_Free(t->first);
    PyMem_Free(t->hashes);
    PyMem_Free(t->slots);
}

static inline size_t mix_hash(uint64_t h) {
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9u;
    h ^= h >> 29;
    return (size_t)h;
}

/* Whether records a and b have equal keys: 1, 0, or -1 with an exception set. */
static int same_key(const KeyTable *t, Py_ssize_t a, Py_ssize_t b) {
    for (Py_ssize_t c = 0; c < t->width; c++) {
        int equal = PyObject_RichCompareBool(PyTuple_GET_ITEM(t->columns[c], a),
                                             PyTuple_GET_ITEM(t->columns[c], b), Py_EQ);
        if (equal != 1) return equal;
    }
    return 1;
}

/* The index of the record's key, *added set when it is new; -1 with an exception set. */
static Py_ssize_t key_of(KeyTable *t, Py_ssize_t record, int *added) {
    uint64_t h = 0x27D4EB2F165667C5u;
    for (Py_ssize_t c = 0; c < t->width; c++) {
        Py_hash_t value = PyObject_Hash(PyTuple_GET_ITEM(t->columns[c], record));
        if (value == -1) return -1;
        h = (h ^ (uint64_t)value) * 0x100000001B3u;
    }
    Py_hash_t hash = (Py_hash_t)h;
    size_t slot = mix_hash(h) & t->mask;
    while (t->slots[slot] >= 0) {
        Py_ssize_t known = t->slots[slot];
        if (t->hashes[known] == hash) {
            int equal = same_key(t, t->first[known], record);
            if (equal < 0) return -1;
            if (equal) {
                *added = 0;
                return known;
            }
        }
        slot = (slot + 1) & t->mask;
    }
    t->slots[slot] = t->count;
    t->first[t->count] = record;
    t->hashes[t->count] = hash;
    *added = 1;
    return t->count++;
}

/* One distinct message: its pattern and its UTF-8 bytes (the examples' order). */
typedef struct {
    Py_ssize_t pattern;
    const char *text;
    Py_ssize_t length;
    int cuts; /* the bounds its pattern was cut at, as pattern_mask says */
} GroupMessage;

/* One (key, pattern): its records and smallest message so far (an index of a message). */
typedef struct {
    Py_ssize_t key, pattern, records, example;
} GroupPattern;

typedef struct {
    KeyTable keys;
    KeyTable message_keys;
    GroupMessage *messages;  /* per distinct message, as message_keys numbers them */
    PyObject *pattern_index; /* pattern str -> its index in patterns */
    PyObject *patterns;      /* the pattern strs, in the order they came */
    PyObject *kept;          /* UTF-8 bytes made for strs with lone surrogates, kept alive */
    Buf last;                /* the last pattern found, as UTF-8 */
    Py_ssize_t last_index;   /* its index, or -1 */
    GroupPattern *entries;   /* in the order each (key, pattern) came */
    Py_ssize_t entry_count;
    Py_ssize_t *slots; /* open addressing over entries by (key, pattern); -1 is free */
    size_t slot_mask;
    Py_ssize_t cut_records[2]; /* records whose pattern was cut at max_tokens, max_length */
} GroupBatch;

static void group_batch_free(GroupBatch *b) {
    key_table_free(&b->keys);
    key_table_free(&b->message_keys);
    Py_XDECREF(b->pattern_index);
    Py_XDECREF(b->patterns);
    Py_XDECREF(b->kept);
    PyMem_Free(b->messages);
    PyMem_Free(b->entries);
    PyMem_Free(b->slots);
    free(b->last.data);
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
    Py_ssize_t index = -1;
    PyObject *known = PyDict_GetItemWithError(b->pattern_index, pattern);
    if (known != NULL) {
        index = PyLong_AsSsize_t(known);
    } else if (!PyErr_Occurred()) {
        PyObject *number = PyLong_FromSsize_t(PyList_GET_SIZE(b->patterns));
        if (number != NULL && !PyDict_SetItem(b->pattern_index, pattern, number) &&
            !PyList_Append(b->patterns, pattern))
            index = PyList_GET_SIZE(b->patterns) - 1;
        Py_XDECREF(number);
    }
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

/* A message seen for the first time: its bytes and pattern; None is the message of a record
 * without one. 0, or -1 with an exception set. */
static int note_message(GroupBatch *b, GroupMessage *m, PyObject *message, size_t max_tokens,
                        size_t max_length) {
    const char *pattern;
    size_t pattern_length;
    m->cuts = 0;
    if (message == Py_None) {
        m->text = "";
        m->length = 0;
        pattern = GROUP_NULL_PATTERN;
        pattern_length = sizeof GROUP_NULL_PATTERN - 1;
    } else if (PyUnicode_Check(message)) {
        m->text = utf8_of(b, message, &m->length);
        if (m->text == NULL) return -1;
        if (pattern_mask(&SCRATCH, m->text, (size_t)m->length, max_tokens, max_length, &pattern,
                         &pattern_length, &m->cuts)) {
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
    return m->pattern < 0 ? -1 : 0;
}

/* Adds one record of `message` (an index into b->messages) to its key's pattern: records add
 * up, and the example kept is the smaller by UTF-8 bytes, as PatternGroups does. */
static void add_record(GroupBatch *b, Py_ssize_t key, Py_ssize_t message) {
    const GroupMessage *m = &b->messages[message];
    b->cut_records[0] += (m->cuts & CUT_TOKENS) != 0;
    b->cut_records[1] += (m->cuts & CUT_LENGTH) != 0;
    size_t slot = mix_hash((uint64_t)key * 0x9E3779B97F4A7C15u ^ (uint64_t)m->pattern) &
                  b->slot_mask;
    while (b->slots[slot] >= 0) {
        GroupPattern *e = &b->entries[b->slots[slot]];
        if (e->key == key && e->pattern == m->pattern) {
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
    b->entries[b->entry_count++] = (GroupPattern){key, m->pattern, 1, message};
}

/* A key's tuple: the values of the first record that has it. */
static PyObject *key_tuple(const KeyTable *t, Py_ssize_t key) {
    PyObject *tuple = PyTuple_New(t->width);
    if (tuple == NULL) return NULL;
    for (Py_ssize_t c = 0; c < t->width; c++) {
        PyObject *value = PyTuple_GET_ITEM(t->columns[c], t->first[key]);
        Py_INCREF(value);
        PyTuple_SET_ITEM(tuple, c, value);
    }
    return tuple;
}

/* {key: [make(pattern, records, example), ...]} from the batch's tables. */
static PyObject *group_results(GroupBatch *b, PyObject *messages, PyObject *make) {
    PyObject *result = PyDict_New();
    PyObject *lists = PyTuple_New(b->keys.count); /* per key, its list in `result` */
    PyObject *empty = PyUnicode_FromStringAndSize("", 0);
    if (result == NULL || lists == NULL || empty == NULL) goto failed;
    for (Py_ssize_t k = 0; k < b->keys.count; k++) {
        PyObject *key = key_tuple(&b->keys, k);
        PyObject *list = PyList_New(0);
        int failed = key == NULL || list == NULL || PyDict_SetItem(result, key, list);
        Py_XDECREF(key);
        if (failed) {
            Py_XDECREF(list);
            goto failed;
        }
        PyTuple_SET_ITEM(lists, k, list);
    }
    for (Py_ssize_t k = 0; k < b->entry_count; k++) {
        const GroupPattern *e = &b->entries[k];
        PyObject *example = PyTuple_GET_ITEM(messages, b->message_keys.first[e->example]);
        PyObject *records = PyLong_FromSsize_t(e->records);
        if (records == NULL) goto failed;
        PyObject *args[3] = {PyList_GET_ITEM(b->patterns, e->pattern), records,
                             example == Py_None ? empty : example};
        PyObject *count = PyObject_Vectorcall(make, args, 3, NULL);
        Py_DECREF(records);
        if (count == NULL || PyList_Append(PyTuple_GET_ITEM(lists, e->key), count)) {
            Py_XDECREF(count);
            goto failed;
        }
        Py_DECREF(count);
    }
    Py_DECREF(lists);
    Py_DECREF(empty);
    return result;
failed:
    Py_XDECREF(result);
    Py_XDECREF(lists);
    Py_XDECREF(empty);
    return NULL;
}

static int group_batch_init(GroupBatch *b, PyObject *const *columns, Py_ssize_t width,
                            PyObject *const *messages, Py_ssize_t count) {
    size_t slots = 16;
    while (slots < 2 * (size_t)count) slots <<= 1;
    b->last_index = -1;
    if (key_table_init(&b->keys, columns, width, count) ||
        key_table_init(&b->message_keys, messages, 1, count))
        return -1;
    b->pattern_index = PyDict_New();
    b->patterns = PyList_New(0);
    b->kept = PyList_New(0);
    if (b->pattern_index == NULL || b->patterns == NULL || b->kept == NULL) return -1;
    b->messages = PyMem_Malloc(((size_t)count + 1) * sizeof(GroupMessage));
    b->entries = PyMem_Malloc(((size_t)count + 1) * sizeof(GroupPattern));
    b->slots = PyMem_Malloc(slots * sizeof(Py_ssize_t));
    b->slot_mask = slots - 1;
    if (b->messages == NULL || b->entries == NULL || b->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(b->slots, 0xFF, slots * sizeof(Py_ssize_t));
    return 0;
}

/* The records' patterns per key (_masker.pyi says what is made); `columns` (tuples) and
 * `messages` (a tuple) are in step, one value per record. */
static PyObject *mask_groups_of(PyObject *const *columns, Py_ssize_t width, PyObject *messages,
                                size_t max_tokens, size_t max_length, PyObject *make,
                                Py_ssize_t cut_records[2]) {
    Py_ssize_t count = PyTuple_GET_SIZE(messages);
    GroupBatch b = {0};
    PyObject *result = NULL;
    if (group_batch_init(&b, columns, width, &messages, count)) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        int added;
        Py_ssize_t key = key_of(&b.keys, i, &added);
        if (key < 0) goto done;
        Py_ssize_t message = key_of(&b.message_keys, i, &added);
        if (message < 0) goto done;
        if (added && note_message(&b, &b.messages[message], PyTuple_GET_ITEM(messages, i),
                                  max_tokens, max_length))
            goto done;
        add_record(&b, key, message);
    }
    result = group_results(&b, messages, make);
    cut_records[0] = b.cut_records[0];
    cut_records[1] = b.cut_records[1];
done:
    mask_scratch_trim(&SCRATCH);
    group_batch_free(&b);
    return result;
}

/* Tuples, one per column and one of the messages, all as long: what is read then stays as it
 * is, whatever a value's __hash__ or __eq__ does. */
static PyObject *columns_tuple(PyObject *columns, PyObject *messages) {
    PyObject *given = PySequence_Tuple(columns);
    if (given == NULL) return NULL;
    Py_ssize_t width = PyTuple_GET_SIZE(given);
    PyObject *all = width > 0 ? PyTuple_New(width + 1) : NULL;
    if (width == 0) PyErr_SetString(PyExc_ValueError, "a key has at least one column");
    for (Py_ssize_t c = 0; all != NULL && c <= width; c++) {
        PyObject *column = PySequence_Tuple(c < width ? PyTuple_GET_ITEM(given, c) : messages);
        if (column == NULL) {
            Py_CLEAR(all);
            break;
        }
        PyTuple_SET_ITEM(all, c, column);
        if (PyTuple_GET_SIZE(column) != PyTuple_GET_SIZE(PyTuple_GET_ITEM(all, 0))) {
            PyErr_SetString(PyExc_ValueError, "the columns and messages differ in length");
            Py_CLEAR(all);
        }
    }
    Py_DECREF(given);
    return all;
}

static PyObject *mask_groups(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "mask_groups(columns, messages, max_tokens, max_length, make)");
        return NULL;
    }
    Py_ssize_t max_tokens = PyLong_AsSsize_t(args[2]);
    Py_ssize_t max_length = PyLong_AsSsize_t(args[3]);
    if ((max_tokens == -1 || max_length == -1) && PyErr_Occurred()) return NULL;
    if (max_tokens < 1 || max_length < MASK_LEN) {
        PyErr_SetString(PyExc_ValueError, "max_tokens must be at least 1 and max_length at least 3");
        return NULL;
    }
    PyObject *all = columns_tuple(args[0], args[1]);
    if (all == NULL) return NULL;
    Py_ssize_t width = PyTuple_GET_SIZE(all) - 1;
    Py_ssize_t cut_records[2] = {0, 0};
    PyObject *groups = mask_groups_of(((PyTupleObject *)all)->ob_item, width,
                                      PyTuple_GET_ITEM(all, width), (size_t)max_tokens,
                                      (size_t)max_length, args[4], cut_records);
    Py_DECREF(all);
    if (groups == NULL) return NULL;
    return Py_BuildValue("(Nnn)", groups, cut_records[0], cut_records[1]);
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
    {"mask_groups", (PyCFunction)(void (*)(void))mask_groups, METH_FASTCALL,
     "mask_groups(columns, messages, max_tokens, max_length, make) -> ({key: [make(pattern, "
     "records, example)]}, records cut at max_tokens, records cut at max_length): a batch's "
     "patterns per key."},
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
