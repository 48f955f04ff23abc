/*
 * otlp_stats.counting._wire: the per-record work of counting, in one pass over the protobuf
 * bytes.
 *
 * check() walks an ExportLogsServiceRequest as the light view in proto/otlp_stats_view/ would
 * decode it, without building any message, and notes for every log record where the raw bytes
 * of the counted attribute's AnyValue are (record > scope > resource; last duplicate key wins,
 * as a protobuf map does) and where its body is, hashing a plain string body with XXH3-64
 * exactly as messages.body_hash does. A malformed request is refused (MalformedWire); what it
 * notes for the others is a Scan, 24 bytes a record.
 *
 * With event time, check(wire, key, True) also notes each record's time (time_unix_nano, else
 * observed_time_unix_nano, else 0), 8 more bytes a record in an array of their own, and
 * tally_windows() groups the records by (window, raw value) rather than by raw value alone, so
 * one request may feed many windows in the same single pass. Arrival time notes no time.
 *
 * With a tuple of keys (at most 16), check() resolves every key in the same walk, each with the
 * same precedence, numbers each key's distinct values as their first records come, and notes
 * each record's number per key; tally_keys() then tallies every key in one call (one release of
 * the GIL, records grouped by those numbers without reading a value again, the theta hashes
 * made and sorted once for all keys, the patterns check() made once grouped by each key), so
 * several keys cost one walk over the bytes, one masking of each distinct body, and one pass
 * per key over the noted numbers.
 * select_key() makes tally() and tally_windows() count by one of them. One key keeps its own
 * walk, unchanged.
 *
 * tally() then works from the Scan without walking the bytes again: it groups the records by
 * raw attribute value, so Python renders one label per distinct value rather than one per
 * record, and hands each group's message hashes over as one serialized compact theta sketch
 * (see "Theta sketches" below) rather than as one Python int per record. Bodies that are not
 * plain strings go back to Python to be hashed canonically.
 *
 * Asked to count patterns, check() also masks each distinct plain string body (one string field
 * of valid UTF-8) with the masker's C rules (patterns/masker_core.h) in the same release of the
 * GIL, once per distinct body of the request (records with the same message hash and bytes share
 * the first's pattern); tally() then gives each (value, pattern)'s records and smallest message,
 * so Python builds objects per distinct (value, pattern), not per record. Other bodies go back to
 * Python, once per (value, body) with their record count.
 *
 * check() accepts exactly what upb's decode of the view accepts (tests/counting/test_wire.py
 * checks this against upb on random and mutated inputs): tags of at most 5 bytes and 32 bits,
 * field number 0 refused outside unknown groups, a field of a known number with another wire type
 * skipped as unknown, unknown groups skipped with their end tag checked, lengths of at most
 * 5 bytes, below 2**31 - 1 and within the enclosing message, map keys valid UTF-8, at most 100
 * levels of nesting.
 *
 * Both release the GIL while they work: the bytes object is immutable, and held by the caller
 * (check) or by the Scan (tally).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

/* The masker's built-in rules (patterns/masker_core.h), pure C: each plain string body is
 * masked in the same pass, with the GIL released. */
#include "../patterns/masker_core.h"

/* XXH3's output is stable from xxHash 0.8.0 on; an older header would hash differently from
 * the xxhash Python package, and counts made by the two scanners would not merge. */
#if XXH_VERSION_NUMBER < 800
#error "xxhash.h 0.8.0 or later is needed (Debian's libxxhash-dev)"
#endif

/* Keys one check() resolves in its one walk (config.MAX_ATTRIBUTE_KEYS). */
#define MAX_KEYS 16

/* Slots of the caches of recent groups (recent_slot). */
#define RECENT_SLOTS 64

/* Key lengths told apart by a table lookup (on_attribute_keys); longer keys share one entry. */
#define KEY_LENGTHS 64

/* upb's default decode depth limit, as the Python protobuf runtime uses it. */
#define MAX_DEPTH 100

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

typedef struct {
    const uint8_t *data;
    Py_ssize_t size; /* -1: absent */
} Slice;

static const Slice ABSENT = {NULL, -1};

/* What a record counts by, as offsets into the request's bytes: 24 bytes however big the
 * record. */
typedef struct {
    uint32_t value_at;  /* the attribute's raw AnyValue */
    int32_t value_size; /* -1: the record has no value for the key */
    uint32_t body_at;   /* raw body bytes (AnyValue encoding) */
    uint32_t body_size;
    uint64_t hash;      /* XXH3-64 of the body when it is a plain string body */
} Record;

/*
 * With several keys, one key's distinct values in a request, numbered in the walk in the order
 * their first records come: each record notes its value's number per key, and tally_keys()
 * groups by number without reading any value again (grouping after the walk read every
 * record's value once more per key, from bytes long out of the cache by then).
 */
typedef struct {
    Slice *values; /* by number */
    uint32_t count;
    uint32_t capacity;
    uint32_t *table; /* open addressing by slice_hash: number + 1, 0 when free */
    size_t slots;
    uint32_t recent[RECENT_SLOTS]; /* per recent_slot: a number met lately, + 1 (0: none) */
    uint32_t last;                 /* the previous record's number */
} ValueNumbers;

typedef struct {
    /* inputs */
    const uint8_t *wire;
    const uint8_t *key; /* the first key */
    size_t key_len;
    int timed; /* note each record's time in `times` (event time) */
    /* outputs */
    Record *records;
    uint64_t *times; /* per record when timed: its time in ns since the epoch, 0 if none */
    size_t count;
    size_t capacity;
    int out_of_memory;
    const char *error;
    /* Several keys; last, so that the one-key walk's fields sit as they did. */
    uint32_t *numbers; /* nkeys per record when nkeys > 1: its value's number per key */
    size_t numbers_capacity; /* records `numbers` has room for */
    ValueNumbers *numbered; /* per key when nkeys > 1, else NULL */
    size_t nkeys; /* 1, or up to MAX_KEYS, resolved in the same walk */
    const uint8_t *keys[MAX_KEYS];
    size_t key_lens[MAX_KEYS];
    /* Per key length below KEY_LENGTHS, a bit per key of that length; longer keys' bits in
     * long_keys: most attributes then compare with no key at all. */
    uint16_t keys_of_length[KEY_LENGTHS];
    uint16_t long_keys;
} Walk;

/* A plain string body (AnyValue.string_value alone) is hashed from its bytes in place. */
static inline int plain_body(const uint8_t *body, size_t size) {
    return size > 0 && body[0] == 0x0A;
}

/*
 * Whether n bytes at a and b are equal, for the short strings attribute keys and values are:
 * two overlapping loads of 8 (or 4) bytes each, all within the n bytes, where a call to
 * memcmp cost more than the comparing it does.
 */
static inline int equal_bytes(const uint8_t *a, const uint8_t *b, size_t n) {
    if (n >= 8 && n <= 16) {
        uint64_t a0, a1, b0, b1;
        memcpy(&a0, a, 8);
        memcpy(&b0, b, 8);
        memcpy(&a1, a + n - 8, 8);
        memcpy(&b1, b + n - 8, 8);
        return ((a0 ^ b0) | (a1 ^ b1)) == 0;
    }
    if (n >= 4 && n < 8) {
        uint32_t a0, a1, b0, b1;
        memcpy(&a0, a, 4);
        memcpy(&b0, b, 4);
        memcpy(&a1, a + n - 4, 4);
        memcpy(&b1, b + n - 4, 4);
        return ((a0 ^ b0) | (a1 ^ b1)) == 0;
    }
    if (n < 4) {
        for (size_t i = 0; i < n; i++) {
            if (a[i] != b[i]) return 0;
        }
        return 1;
    }
    return memcmp(a, b, n) == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Wire primitives. Each returns NULL on malformed input, with walk->error set.               */

static const uint8_t *fail(Walk *walk, const char *why) {
    if (walk->error == NULL) walk->error = why;
    return NULL;
}

static inline const uint8_t *read_varint(Walk *walk, const uint8_t *p, const uint8_t *end,
                                         uint64_t *out) {
    if (p < end && *p < 0x80) { /* tags and short lengths: one byte */
        *out = *p;
        return p + 1;
    }
    uint64_t value = 0;
    for (int i = 0; i < 10; i++) {
        if (p >= end) return fail(walk, "truncated varint");
        uint8_t byte = *p++;
        value |= (uint64_t)(byte & 0x7F) << (7 * i);
        if (!(byte & 0x80)) {
            *out = value;
            return p;
        }
    }
    return fail(walk, "varint longer than 10 bytes");
}

static inline const uint8_t *read_tag(Walk *walk, const uint8_t *p, const uint8_t *end,
                               uint32_t *field, int *wire_type) {
    const uint8_t *start = p;
    uint64_t tag;
    p = read_varint(walk, p, end, &tag);
    if (p == NULL) return NULL;
    if (p - start > 5 || tag > UINT32_MAX) return fail(walk, "tag out of range");
    *field = (uint32_t)(tag >> 3);
    *wire_type = (int)(tag & 7);
    return p;
}

/* A length-delimited field's contents: [*begin, returned pointer). upb reads a length as it
 * reads a tag, in at most 5 bytes. */
static inline const uint8_t *read_len(Walk *walk, const uint8_t *p, const uint8_t *end,
                                      const uint8_t **begin) {
    const uint8_t *start = p;
    uint64_t size;
    p = read_varint(walk, p, end, &size);
    if (p == NULL) return NULL;
    if (p - start > 5) return fail(walk, "length longer than 5 bytes");
    if (size >= INT32_MAX || size > (uint64_t)(end - p)) return fail(walk, "length past end");
    *begin = p;
    return p + size;
}

static const uint8_t *skip_group(Walk *walk, const uint8_t *p, const uint8_t *end,
                                 uint32_t number, int depth);

/*
 * Skip the value of a field of a number the view does not know (or of an unexpected type).
 * upb refuses field number 0 in a message but not inside an unknown group.
 */
static const uint8_t *skip_value(Walk *walk, const uint8_t *p, const uint8_t *end,
                                 uint32_t field, int wire_type, int depth, int in_group) {
    uint64_t ignored;
    const uint8_t *begin;
    switch (wire_type) {
        case WT_VARINT:
            p = read_varint(walk, p, end, &ignored);
            break;
        case WT_I64:
            if (end - p < 8) return fail(walk, "truncated fixed64");
            p += 8;
            break;
        case WT_LEN:
            p = read_len(walk, p, end, &begin);
            break;
        case WT_I32:
            if (end - p < 4) return fail(walk, "truncated fixed32");
            p += 4;
            break;
        case WT_SGROUP:
            if (field == 0 && !in_group) return fail(walk, "field number 0");
            return skip_group(walk, p, end, field, depth);
        default: /* end group here is handled by the caller; 6 and 7 are not wire types */
            return fail(walk, "invalid wire type");
    }
    if (p != NULL && field == 0 && !in_group) return fail(walk, "field number 0");
    return p;
}

static const uint8_t *skip_group(Walk *walk, const uint8_t *p, const uint8_t *end,
                                 uint32_t number, int depth) {
    if (p >= end) return fail(walk, "truncated group");
    if (depth - 1 < 0) return fail(walk, "nested too deeply");
    while (p < end) {
        uint32_t field;
        int wire_type;
        p = read_tag(walk, p, end, &field, &wire_type);
        if (p == NULL) return NULL;
        if (wire_type == WT_EGROUP) {
            if (field != number) return fail(walk, "mismatched end group");
            return p;
        }
        p = skip_value(walk, p, end, field, wire_type, depth - 1, 1);
        if (p == NULL) return NULL;
    }
    return fail(walk, "group without end");
}

/*
 * Walk a message's fields: `on_field` is called for each length-delimited field of a number
 * in `wanted` (a bitmask of field numbers below 32); every other field is skipped. A stray
 * end-group tag ends nothing here, so it is malformed.
 */
typedef int (*FieldHandler)(Walk *walk, uint32_t field, const uint8_t *begin,
                            const uint8_t *end, int depth, void *state);

static int walk_message(Walk *walk, const uint8_t *p, const uint8_t *end, int depth,
                        uint32_t wanted, FieldHandler on_field, void *state) {
    while (p < end) {
        uint32_t field;
        int wire_type;
        p = read_tag(walk, p, end, &field, &wire_type);
        if (p == NULL) return -1;
        if (wire_type == WT_EGROUP) {
            fail(walk, "end group outside a group");
            return -1;
        }
        if (wire_type == WT_LEN && field < 32 && (wanted >> field) & 1u) {
            const uint8_t *begin;
            p = read_len(walk, p, end, &begin);
            if (p == NULL) return -1;
            if (depth - 1 < 0) {
                fail(walk, "nested too deeply");
                return -1;
            }
            if (on_field(walk, field, begin, p, depth - 1, state) < 0) return -1;
        } else {
            p = skip_value(walk, p, end, field, wire_type, depth, 0);
            if (p == NULL) return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* UTF-8, as strictly as upb checks proto3 strings: no overlongs, surrogates or > U+10FFFF.   */

/* Keys are nearly always short and ASCII: look at them eight bytes at a time, the last eight
 * overlapping the ones before, and at a key under eight bytes byte by byte at once. */
static inline int all_ascii(const uint8_t *s, size_t n) {
    uint64_t high = 0, word;
    if (n >= 8) {
        for (size_t i = 0; i + 8 <= n; i += 8) {
            memcpy(&word, s + i, 8);
            high |= word;
        }
        memcpy(&word, s + n - 8, 8);
        high |= word;
    } else {
        for (size_t i = 0; i < n; i++) high |= s[i];
    }
    return !(high & 0x8080808080808080ull);
}

/* Inlined into on_attribute, every attribute's step, even now that on_attribute_keys calls it
 * too (a second caller made gcc keep it out of line, 10% more per record). */
static inline __attribute__((always_inline)) int valid_utf8(const uint8_t *s,
                                                            const uint8_t *end) {
    if (all_ascii(s, (size_t)(end - s))) return 1;
    while (s < end) {
        uint8_t c = *s;
        if (c < 0x80) {
            s++;
            continue;
        }
        Py_ssize_t n;
        uint8_t low = 0x80, high = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            if (c == 0xE0) low = 0xA0;
            if (c == 0xED) high = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            if (c == 0xF0) low = 0x90;
            if (c == 0xF4) high = 0x8F;
        } else {
            return 0;
        }
        if (end - s <= n) return 0;
        if (s[1] < low || s[1] > high) return 0;
        for (Py_ssize_t i = 2; i <= n; i++) {
            if (s[i] < 0x80 || s[i] > 0xBF) return 0;
        }
        s += n + 1;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* The view's levels.                                                                          */

/*
 * One map entry (KeyValue {key = 1; value = 2}): when its key is the counted one, its value
 * replaces *found. An entry carrying any other field is left out of the map, as upb leaves it
 * (it keeps such an entry among the parent's unknown fields), so both scanners agree. The
 * hottest loop of all (every attribute of every record), so it is written out rather than
 * going through walk_message.
 */
static int on_attribute(Walk *walk, uint32_t field, const uint8_t *p, const uint8_t *end,
                        int depth, void *state) {
    (void)field;
    Slice *found = state;
    /* Absent fields are empty slices that still point into the buffer (never NULL, which
     * memcmp and PyBytes_FromStringAndSize would not take kindly even at length 0). */
    Slice key = {p, 0};
    Slice value = {p, 0};
    int unknown = 0;
    while (p < end) {
        uint32_t number;
        int wire_type;
        p = read_tag(walk, p, end, &number, &wire_type);
        if (p == NULL) return -1;
        if (wire_type == WT_LEN && (number == 1 || number == 2)) {
            const uint8_t *begin;
            p = read_len(walk, p, end, &begin);
            if (p == NULL) return -1;
            if (number == 2) {
                value.data = begin;
                value.size = p - begin;
            } else {
                /* upb checks every occurrence of the key, not only the last one. */
                if (!valid_utf8(begin, p)) {
                    fail(walk, "attribute key is not valid UTF-8");
                    return -1;
                }
                key.data = begin;
                key.size = p - begin;
            }
        } else if (wire_type == WT_EGROUP) {
            fail(walk, "end group outside a group");
            return -1;
        } else {
            unknown = 1;
            p = skip_value(walk, p, end, number, wire_type, depth, 0);
            if (p == NULL) return -1;
        }
    }
    if (!unknown && (size_t)key.size == walk->key_len &&
        memcmp(key.data, walk->key, walk->key_len) == 0) {
        *found = value;
    }
    return 0;
}

/* Resource (attributes = 1) and InstrumentationScope (attributes = 3). */
static int on_resource(Walk *walk, uint32_t field, const uint8_t *begin, const uint8_t *end,
                       int depth, void *state) {
    (void)field;
    return walk_message(walk, begin, end, depth, 1u << 1, on_attribute, state);
}

static int on_scope(Walk *walk, uint32_t field, const uint8_t *begin, const uint8_t *end,
                    int depth, void *state) {
    (void)field;
    return walk_message(walk, begin, end, depth, 1u << 3, on_attribute, state);
}

typedef struct {
    Slice value;
    Slice body;
} RecordFields;

static int on_record_field(Walk *walk, uint32_t field, const uint8_t *begin,
                           const uint8_t *end, int depth, void *state) {
    RecordFields *record = state;
    if (field == 5) {
        record->body.data = begin;
        record->body.size = end - begin;
        return 0;
    }
    return on_attribute(walk, field, begin, end, depth, &record->value);
}

static int add_record(Walk *walk, Slice value, Slice body) {
    if (walk->count == walk->capacity) {
        size_t capacity = walk->capacity ? walk->capacity * 2 : 1024;
        Record *grown = capacity > SIZE_MAX / sizeof(Record)
                            ? NULL
                            : realloc(walk->records, capacity * sizeof(Record));
        if (grown == NULL) {
            walk->out_of_memory = 1;
            fail(walk, "out of memory");
            return -1;
        }
        walk->records = grown;
        if (walk->timed) {
            uint64_t *times = realloc(walk->times, capacity * sizeof(uint64_t));
            if (times == NULL) {
                walk->out_of_memory = 1;
                fail(walk, "out of memory");
                return -1;
            }
            walk->times = times;
        }
        walk->capacity = capacity;
    }
    Record *record = &walk->records[walk->count++];
    /* Offsets fit: check() refuses a request of 2**32 bytes or more. */
    record->value_at = value.size < 0 ? 0 : (uint32_t)(value.data - walk->wire);
    record->value_size = (int32_t)value.size;
    record->body_at = (uint32_t)(body.data - walk->wire);
    record->body_size = (uint32_t)body.size;
    record->hash = plain_body(body.data, (size_t)body.size)
                       ? XXH3_64bits(body.data, (size_t)body.size)
                       : 0;
    return 0;
}

typedef struct {
    Slice inherited; /* the scope's value, else the resource's */
} ScopeState;

/* A fixed64 as protobuf encodes it: little-endian, whatever the host. */
static inline uint64_t read_fixed64(const uint8_t *p) {
    uint64_t value = 0;
    for (int b = 7; b >= 0; b--) value = (value << 8) | p[b];
    return value;
}

/*
 * A LogRecord whose times are wanted: walk_message with fixed64 fields 1 (time_unix_nano) and
 * 11 (observed_time_unix_nano) noted, the last occurrence winning as for any proto3 scalar. The
 * view declares both, so upb decodes them; either number with another wire type is an unknown
 * field to upb, skipped (and validated) as unknown here too.
 */
static int on_timed_log_record(Walk *walk, const uint8_t *p, const uint8_t *end, int depth,
                               const ScopeState *scope) {
    RecordFields record = {ABSENT, {p, 0}};
    uint64_t time = 0, observed = 0;
    while (p < end) {
        uint32_t number;
        int wire_type;
        p = read_tag(walk, p, end, &number, &wire_type);
        if (p == NULL) return -1;
        if (wire_type == WT_I64 && (number == 1 || number == 11)) {
            if (end - p < 8) {
                fail(walk, "truncated fixed64");
                return -1;
            }
            if (number == 1) {
                time = read_fixed64(p);
            } else {
                observed = read_fixed64(p);
            }
            p += 8;
        } else if (wire_type == WT_EGROUP) {
            fail(walk, "end group outside a group");
            return -1;
        } else if (wire_type == WT_LEN && (number == 5 || number == 6)) {
            const uint8_t *begin;
            p = read_len(walk, p, end, &begin);
            if (p == NULL) return -1;
            if (depth - 1 < 0) {
                fail(walk, "nested too deeply");
                return -1;
            }
            /* As on_record_field, which stays with its one caller (where it is inlined). */
            if (number == 5) {
                record.body.data = begin;
                record.body.size = p - begin;
            } else if (on_attribute(walk, number, begin, p, depth - 1, &record.value) < 0) {
                return -1;
            }
        } else {
            p = skip_value(walk, p, end, number, wire_type, depth, 0);
            if (p == NULL) return -1;
        }
    }
    if (add_record(walk, record.value.size >= 0 ? record.value : scope->inherited, record.body) <
        0) {
        return -1;
    }
    walk->times[walk->count - 1] = time != 0 ? time : observed;
    return 0;
}

static int on_log_record(Walk *walk, uint32_t field, const uint8_t *begin, const uint8_t *end,
                         int depth, void *state) {
    (void)field;
    ScopeState *scope = state;
    if (walk->timed) return on_timed_log_record(walk, begin, end, depth, scope);
    RecordFields record = {ABSENT, {begin, 0}}; /* no body: an empty one, as the view has it */
    if (walk_message(walk, begin, end, depth, (1u << 5) | (1u << 6), on_record_field, &record) <
        0) {
        return -1;
    }
    return add_record(walk, record.value.size >= 0 ? record.value : scope->inherited,
                      record.body);
}

/*
 * ScopeLogs and ResourceLogs are walked twice: first for the scope (the resource), which may
 * follow the records (the scopes) on the wire, then for the records (the scopes). Each pass
 * wants one field and skips the other, so every submessage is still validated exactly once.
 */
static int on_scope_logs(Walk *walk, uint32_t field, const uint8_t *begin, const uint8_t *end,
                         int depth, void *state) {
    (void)field;
    const Slice *resource_value = state;
    Slice scope_value = ABSENT;
    if (walk_message(walk, begin, end, depth, 1u << 1, on_scope, &scope_value) < 0) return -1;
    ScopeState scope = {scope_value.size >= 0 ? scope_value : *resource_value};
    return walk_message(walk, begin, end, depth, 1u << 2, on_log_record, &scope);
}

static int on_resource_logs(Walk *walk, uint32_t field, const uint8_t *begin,
                            const uint8_t *end, int depth, void *state) {
    (void)field;
    (void)state;
    Slice resource_value = ABSENT;
    if (walk_message(walk, begin, end, depth, 1u << 1, on_resource, &resource_value) < 0) {
        return -1;
    }
    return walk_message(walk, begin, end, depth, 1u << 2, on_scope_logs, &resource_value);
}

/* ------------------------------------------------------------------------------------------ */
/* Values compared and found: what grouping records by value needs, in the walk (several keys)
 * and after it (tally).                                                                      */

static inline int same(Slice a, Slice b) {
    return a.size == b.size && (a.size <= 0 || equal_bytes(a.data, b.data, (size_t)a.size));
}

/* Seeded at import from os.urandom: the grouping tables probe linearly, and a sender who could
 * predict where values land could make every lookup walk the whole table. */
static uint64_t table_seed;

static uint64_t slice_hash(Slice slice) {
    if (slice.size < 0) return table_seed ^ 0x9E3779B97F4A7C15ull;
    return XXH3_64bits_withSeed(slice.data, (size_t)slice.size, table_seed);
}

/* Where a value may sit in a cache of recent groups (group_records_by's, and a key's numbers in
 * the walk): from its size and last two bytes, which tell apart the usual few values of a key
 * (a string's first bytes are its tag and length). Values that share a slot only cost the full
 * lookup. */
static inline size_t recent_slot(Slice value) {
    if (value.size < 2) return (size_t)(value.size + 1) & (RECENT_SLOTS - 1);
    uint32_t last = value.data[value.size - 1], before = value.data[value.size - 2];
    return (size_t)(((uint32_t)value.size * 0x9E37u) ^ (last * 0x45u) ^ (before * 0x3B1u)) &
           (RECENT_SLOTS - 1);
}

/* ------------------------------------------------------------------------------------------ */
/* Several keys (check() given a tuple): the same single walk, every key's value resolved in it
 * with the same precedence. These mirror the one-key functions above rather than generalizing
 * them, so that one key's walk (the usual case, and the hottest code here) costs what it did;
 * tests/counting/test_keys.py checks every key against the one-key scanner's answer.          */

/* equal_bytes for a key: keys of 17 to 32 bytes (http.request.method, k8s.namespace.name)
 * compared as two halves of 16, where memcmp's call cost more than its comparing. */
static inline int equal_key(const uint8_t *a, const uint8_t *b, size_t n) {
    if (n > 16 && n <= 32) {
        return equal_bytes(a, b, 16) && equal_bytes(a + n - 16, b + n - 16, 16);
    }
    return equal_bytes(a, b, n);
}

/* on_attribute for every key: `state` holds one Slice per key. */
static int on_attribute_keys(Walk *walk, uint32_t field, const uint8_t *p, const uint8_t *end,
                             int depth, void *state) {
    (void)field;
    Slice *found = state;
    Slice key = {p, 0};
    Slice value = {p, 0};
    int unknown = 0;
    while (p < end) {
        uint32_t number;
        int wire_type;
        p = read_tag(walk, p, end, &number, &wire_type);
        if (p == NULL) return -1;
        if (wire_type == WT_LEN && (number == 1 || number == 2)) {
            const uint8_t *begin;
            p = read_len(walk, p, end, &begin);
            if (p == NULL) return -1;
            if (number == 2) {
                value.data = begin;
                value.size = p - begin;
            } else {
                if (!valid_utf8(begin, p)) {
                    fail(walk, "attribute key is not valid UTF-8");
                    return -1;
                }
                key.data = begin;
                key.size = p - begin;
            }
        } else if (wire_type == WT_EGROUP) {
            fail(walk, "end group outside a group");
            return -1;
        } else {
            unknown = 1;
            p = skip_value(walk, p, end, number, wire_type, depth, 0);
            if (p == NULL) return -1;
        }
    }
    if (unknown) return 0;
    size_t length = (size_t)key.size;
    unsigned candidates = length < KEY_LENGTHS ? walk->keys_of_length[length] : walk->long_keys;
    while (candidates != 0) {
        size_t i = (size_t)__builtin_ctz(candidates);
        candidates &= candidates - 1;
        if (length == walk->key_lens[i] && equal_key(key.data, walk->keys[i], length)) {
            found[i] = value;
            break; /* the keys are distinct */
        }
    }
    return 0;
}

static int on_resource_keys(Walk *walk, uint32_t field, const uint8_t *begin,
                            const uint8_t *end, int depth, void *state) {
    (void)field;
    return walk_message(walk, begin, end, depth, 1u << 1, on_attribute_keys, state);
}

static int on_scope_keys(Walk *walk, uint32_t field, const uint8_t *begin, const uint8_t *end,
                         int depth, void *state) {
    (void)field;
    return walk_message(walk, begin, end, depth, 1u << 3, on_attribute_keys, state);
}

typedef struct {
    Slice body;
    Slice values[MAX_KEYS]; /* the record's own, per key */
} KeyedRecordFields;

typedef struct {
    Slice inherited[MAX_KEYS]; /* per key: the scope's value, else the resource's */
} KeyedScopeState;

static void set_absent(Slice *values, size_t n) {
    for (size_t i = 0; i < n; i++) values[i] = ABSENT;
}

static int on_keyed_record_field(Walk *walk, uint32_t field, const uint8_t *begin,
                                 const uint8_t *end, int depth, void *state) {
    KeyedRecordFields *record = state;
    if (field == 5) {
        record->body.data = begin;
        record->body.size = end - begin;
        return 0;
    }
    return on_attribute_keys(walk, field, begin, end, depth, record->values);
}

static void numbers_free(ValueNumbers *numbered, size_t nkeys) {
    if (numbered == NULL) return;
    for (size_t k = 0; k < nkeys; k++) {
        free(numbered[k].values);
        free(numbered[k].table);
    }
    free(numbered);
}

/* The same value: the same bytes, or where inherited from a scope or resource, the same place. */
static inline int same_value(Slice a, Slice b) {
    return (a.data == b.data && a.size == b.size) || same(a, b);
}

/* Twice the slots (16 at first), every number placed again; -1 when out of memory. */
static int grow_number_table(ValueNumbers *numbered) {
    size_t slots = numbered->slots ? numbered->slots * 2 : 16;
    uint32_t *table = calloc(slots, sizeof(uint32_t));
    if (table == NULL) return -1;
    for (uint32_t n = 0; n < numbered->count; n++) {
        size_t slot = (size_t)slice_hash(numbered->values[n]) & (slots - 1);
        while (table[slot] != 0) slot = (slot + 1) & (slots - 1);
        table[slot] = n + 1;
    }
    free(numbered->table);
    numbered->table = table;
    numbered->slots = slots;
    return 0;
}

/* A new number for a value not met before, at its free slot; -1 when out of memory. */
static int64_t new_number(ValueNumbers *numbered, size_t slot, Slice value) {
    if (numbered->count == numbered->capacity) {
        uint32_t capacity = numbered->capacity ? numbered->capacity * 2 : 16;
        Slice *grown = realloc(numbered->values, capacity * sizeof(Slice));
        if (grown == NULL) return -1;
        numbered->values = grown;
        numbered->capacity = capacity;
    }
    numbered->values[numbered->count] = value;
    numbered->table[slot] = ++numbered->count;
    return numbered->count - 1;
}

/* The number of a record's value for one key: the previous record's, a recent one's, or found
 * (or made) in the key's table. -1 when out of memory. */
static int64_t number_value(ValueNumbers *numbered, Slice value, int inherited) {
    /* A value inherited from the scope or resource is the same bytes record after record; a
     * record's own value never is, so it goes without the test. */
    if (inherited && numbered->count > 0 && numbered->values[numbered->last].data == value.data &&
        numbered->values[numbered->last].size == value.size)
        return numbered->last;
    size_t recent = recent_slot(value);
    uint32_t nearby = numbered->recent[recent];
    if (nearby != 0 && same(numbered->values[nearby - 1], value)) {
        numbered->last = nearby - 1;
        return numbered->last;
    }
    /* At most half full, so that a probe meets a free slot soon. */
    if (2 * (size_t)numbered->count >= numbered->slots && grow_number_table(numbered) < 0)
        return -1;
    size_t mask = numbered->slots - 1;
    size_t slot = (size_t)slice_hash(value) & mask;
    while (numbered->table[slot] != 0 &&
           !same(numbered->values[numbered->table[slot] - 1], value)) {
        slot = (slot + 1) & mask;
    }
    int64_t number =
        numbered->table[slot] != 0 ? numbered->table[slot] - 1 : new_number(numbered, slot, value);
    if (number < 0) return -1;
    numbered->recent[recent] = (uint32_t)number + 1;
    numbered->last = (uint32_t)number;
    return number;
}

/* add_record with the first key's value, then every key's value's number into walk->numbers. */
static int add_keyed_record(Walk *walk, const KeyedRecordFields *record,
                            const KeyedScopeState *scope) {
    Slice first = record->values[0].size >= 0 ? record->values[0] : scope->inherited[0];
    if (add_record(walk, first, record->body) < 0) return -1;
    if (walk->numbers_capacity < walk->capacity) {
        uint32_t *grown =
            walk->capacity > SIZE_MAX / sizeof(uint32_t) / walk->nkeys
                ? NULL
                : realloc(walk->numbers, walk->capacity * walk->nkeys * sizeof(uint32_t));
        if (grown == NULL) {
            walk->out_of_memory = 1;
            fail(walk, "out of memory");
            return -1;
        }
        walk->numbers = grown;
        walk->numbers_capacity = walk->capacity;
    }
    uint32_t *numbers = &walk->numbers[(walk->count - 1) * walk->nkeys];
    for (size_t i = 0; i < walk->nkeys; i++) {
        int own = record->values[i].size >= 0;
        Slice value = own ? record->values[i] : scope->inherited[i];
        int64_t number = number_value(&walk->numbered[i], value, !own);
        if (number < 0) {
            walk->out_of_memory = 1;
            fail(walk, "out of memory");
            return -1;
        }
        numbers[i] = (uint32_t)number;
    }
    return 0;
}

/* on_timed_log_record for every key. */
static int on_timed_keyed_record(Walk *walk, const uint8_t *p, const uint8_t *end, int depth,
                                 const KeyedScopeState *scope) {
    KeyedRecordFields record;
    record.body.data = p;
    record.body.size = 0;
    set_absent(record.values, walk->nkeys);
    uint64_t time = 0, observed = 0;
    while (p < end) {
        uint32_t number;
        int wire_type;
        p = read_tag(walk, p, end, &number, &wire_type);
        if (p == NULL) return -1;
        if (wire_type == WT_I64 && (number == 1 || number == 11)) {
            if (end - p < 8) {
                fail(walk, "truncated fixed64");
                return -1;
            }
            if (number == 1) {
                time = read_fixed64(p);
            } else {
                observed = read_fixed64(p);
            }
            p += 8;
        } else if (wire_type == WT_EGROUP) {
            fail(walk, "end group outside a group");
            return -1;
        } else if (wire_type == WT_LEN && (number == 5 || number == 6)) {
            const uint8_t *begin;
            p = read_len(walk, p, end, &begin);
            if (p == NULL) return -1;
            if (depth - 1 < 0) {
                fail(walk, "nested too deeply");
                return -1;
            }
            if (number == 5) {
                record.body.data = begin;
                record.body.size = p - begin;
            } else if (on_attribute_keys(walk, number, begin, p, depth - 1, record.values) < 0) {
                return -1;
            }
        } else {
            p = skip_value(walk, p, end, number, wire_type, depth, 0);
            if (p == NULL) return -1;
        }
    }
    if (add_keyed_record(walk, &record, scope) < 0) return -1;
    walk->times[walk->count - 1] = time != 0 ? time : observed;
    return 0;
}

static int on_keyed_log_record(Walk *walk, uint32_t field, const uint8_t *begin,
                               const uint8_t *end, int depth, void *state) {
    (void)field;
    const KeyedScopeState *scope = state;
    if (walk->timed) return on_timed_keyed_record(walk, begin, end, depth, scope);
    KeyedRecordFields record;
    record.body.data = begin; /* no body: an empty one, as the view has it */
    record.body.size = 0;
    set_absent(record.values, walk->nkeys);
    if (walk_message(walk, begin, end, depth, (1u << 5) | (1u << 6), on_keyed_record_field,
                     &record) < 0) {
        return -1;
    }
    return add_keyed_record(walk, &record, scope);
}

static int on_scope_logs_keys(Walk *walk, uint32_t field, const uint8_t *begin,
                              const uint8_t *end, int depth, void *state) {
    (void)field;
    const Slice *resource_values = state;
    Slice scope_values[MAX_KEYS];
    set_absent(scope_values, walk->nkeys);
    if (walk_message(walk, begin, end, depth, 1u << 1, on_scope_keys, scope_values) < 0) {
        return -1;
    }
    KeyedScopeState scope;
    for (size_t i = 0; i < walk->nkeys; i++) {
        scope.inherited[i] = scope_values[i].size >= 0 ? scope_values[i] : resource_values[i];
    }
    return walk_message(walk, begin, end, depth, 1u << 2, on_keyed_log_record, &scope);
}

static int on_resource_logs_keys(Walk *walk, uint32_t field, const uint8_t *begin,
                                 const uint8_t *end, int depth, void *state) {
    (void)field;
    (void)state;
    Slice resource_values[MAX_KEYS];
    set_absent(resource_values, walk->nkeys);
    if (walk_message(walk, begin, end, depth, 1u << 1, on_resource_keys, resource_values) < 0) {
        return -1;
    }
    return walk_message(walk, begin, end, depth, 1u << 2, on_scope_logs_keys, resource_values);
}

static int walk_request(Walk *walk, const uint8_t *data, Py_ssize_t size) {
    /* Each call with its callback known, so that walk_message is specialized for it. */
    if (walk->nkeys > 1) {
        return walk_message(walk, data, data + size, MAX_DEPTH, 1u << 1, on_resource_logs_keys,
                            NULL);
    }
    return walk_message(walk, data, data + size, MAX_DEPTH, 1u << 1, on_resource_logs, NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* Grouping records by raw attribute value (GIL released).                                     */

typedef struct {
    Slice value;
    uint64_t window; /* its window's index (event time); 0 with arrival time */
    size_t size;   /* records in the group */
    size_t plain;  /* of which with a plain string body */
    size_t first;  /* where its theta hashes start (theta_hashes) */
    size_t unique; /* how many distinct theta hashes it has, once sorted */
} Group;

static inline Slice record_value(const uint8_t *wire, const Record *record) {
    if (record->value_size < 0) return ABSENT;
    Slice value = {wire + record->value_at, record->value_size};
    return value;
}

static inline int record_is_plain(const uint8_t *wire, const Record *record) {
    return plain_body(wire + record->body_at, record->body_size);
}

/* What a tally works out before it builds its Python result. */
typedef struct {
    Group *groups;
    size_t group_count;
    size_t *group_of; /* per record, the index of its group */
    uint64_t *hashes; /* theta hashes, per group (theta_hashes) */
    size_t *structured; /* records with other bodies, one per distinct (group, body) */
    size_t structured_count;
    /* Patterns counted: the records whose pattern Python works out, one per distinct (group,
     * body), and how many records each stands for. */
    size_t *unmasked;
    size_t *unmasked_records;
    size_t unmasked_count;
} Grouped;

static void grouped_free(Grouped *grouped) {
    free(grouped->groups);
    free(grouped->group_of);
    free(grouped->hashes);
    free(grouped->structured);
    free(grouped->unmasked);
    free(grouped->unmasked_records);
}

/* Assigns each record its group, by raw value and, when `windows` is given, by window; returns
 * -1 when out of memory. Inlined into its callers, so that arrival time's (windows NULL)
 * compiles without any of the window's work per record. */
static inline __attribute__((always_inline)) int group_records_by(
    const uint8_t *wire, const Record *records, const uint64_t *windows, size_t count,
    Grouped *grouped) {
    if (count > SIZE_MAX / 2 / sizeof(Group)) return -1; /* only reachable on 32 bits */
    size_t slots = 16;
    while (slots < count * 2) slots *= 2;
    Py_ssize_t *table = malloc(slots * sizeof(Py_ssize_t));
    Group *groups = malloc((count ? count : 1) * sizeof(Group));
    size_t *group_of = malloc((count ? count : 1) * sizeof(size_t));
    if (table == NULL || groups == NULL || group_of == NULL) {
        free(table);
        free(groups);
        free(group_of);
        return -1;
    }
    for (size_t i = 0; i < slots; i++) table[i] = -1;
    /* Per slot, a group whose value was met lately (+ 1; 0: none): records whose values
     * alternate among a few find theirs without hashing it. */
    size_t recent[RECENT_SLOTS] = {0};
    size_t group_count = 0;
    size_t last = SIZE_MAX;
    for (size_t i = 0; i < count; i++) {
        Slice value = record_value(wire, &records[i]);
        uint64_t window = windows == NULL ? 0 : windows[i];
        size_t group;
        size_t nearby;
        /* Consecutive records nearly always share a value: compare with the last one first. */
        if (last != SIZE_MAX && groups[last].window == window && same(groups[last].value, value)) {
            group = last;
        } else if ((nearby = recent[recent_slot(value)]) != 0 &&
                   groups[nearby - 1].window == window && same(groups[nearby - 1].value, value)) {
            group = last = nearby - 1;
        } else {
            size_t slot =
                (size_t)(slice_hash(value) ^ (window * 0x9E3779B97F4A7C15ull)) & (slots - 1);
            while (table[slot] >= 0 && !(groups[table[slot]].window == window &&
                                         same(groups[table[slot]].value, value))) {
                slot = (slot + 1) & (slots - 1);
            }
            if (table[slot] < 0) {
                table[slot] = (Py_ssize_t)group_count;
                groups[group_count].value = value;
                groups[group_count].window = window;
                groups[group_count].size = 0;
                groups[group_count].plain = 0;
                group_count++;
            }
            group = (size_t)table[slot];
            last = group;
            recent[recent_slot(value)] = group + 1;
        }
        group_of[i] = group;
        groups[group].size++;
        groups[group].plain += (size_t)record_is_plain(wire, &records[i]);
    }
    free(table);
    grouped->groups = groups;
    grouped->group_count = group_count;
    grouped->group_of = group_of;
    return 0;
}

static int group_records(const uint8_t *wire, const Record *records, size_t count,
                         Grouped *grouped) {
    return group_records_by(wire, records, NULL, count, grouped);
}

/* Several keys: one key's groups from the numbers the walk gave its values (`stride` per
 * record, from `numbers`), in the same order group_records gives them; `plain` per record. */
static int group_by_numbers(const ValueNumbers *numbered, const uint32_t *numbers, size_t stride,
                            const uint8_t *plain, size_t count, Grouped *grouped) {
    size_t group_count = numbered->count;
    Group *groups = malloc((group_count ? group_count : 1) * sizeof(Group));
    size_t *group_of = malloc((count ? count : 1) * sizeof(size_t));
    if (groups == NULL || group_of == NULL) {
        free(groups);
        free(group_of);
        return -1;
    }
    for (size_t g = 0; g < group_count; g++) {
        groups[g].value = numbered->values[g];
        groups[g].window = 0;
        groups[g].size = 0;
        groups[g].plain = 0;
    }
    for (size_t i = 0; i < count; i++) {
        size_t group = numbers[i * stride];
        group_of[i] = group;
        groups[group].size++;
        groups[group].plain += plain[i];
    }
    grouped->groups = groups;
    grouped->group_count = group_count;
    grouped->group_of = group_of;
    return 0;
}

static int group_records_in_windows(const uint8_t *wire, const Record *records,
                                    const uint64_t *windows, size_t count, Grouped *grouped) {
    return group_records_by(wire, records, windows, count, grouped);
}

/*
 * One record per distinct (group, body) among the records selected: those whose body is not a
 * plain string (`pattern_of` NULL), or those without a pattern from C (pattern_of[i] is
 * NO_PATTERN); with `counts`, how many records each stands for. Returns -1 when out of memory.
 */
#define NO_PATTERN UINT32_MAX

static inline __attribute__((always_inline)) int distinct_bodies(
    const uint8_t *wire, const Record *records, size_t count, const size_t *group_of,
    const uint32_t *pattern_of, const uint8_t *plain, size_t others, size_t **out,
    size_t **counts, size_t *kept_count) {
#define SELECTED(i)                                                                       \
    (pattern_of != NULL ? pattern_of[i] == NO_PATTERN                                     \
                        : plain != NULL ? !plain[i] : !record_is_plain(wire, &records[i]))
    if (others == SIZE_MAX) { /* not counted by the caller */
        others = 0;
        for (size_t i = 0; i < count; i++) others += (size_t)SELECTED(i);
    }
    size_t slots = 16;
    while (slots < others * 2) slots *= 2;
    size_t *table = malloc(slots * sizeof(size_t));
    size_t *kept_records = malloc((others ? others : 1) * sizeof(size_t));
    size_t *kept_counts = counts == NULL ? NULL : malloc((others ? others : 1) * sizeof(size_t));
    if (table == NULL || kept_records == NULL || (counts != NULL && kept_counts == NULL)) {
        free(table);
        free(kept_records);
        free(kept_counts);
        return -1;
    }
    for (size_t i = 0; i < slots; i++) table[i] = SIZE_MAX;
    size_t kept = 0;
    for (size_t i = 0; i < count && others > 0; i++) {
        if (!SELECTED(i)) continue;
        Slice body = {wire + records[i].body_at, records[i].body_size};
        size_t group = group_of[i];
        size_t slot = (size_t)(slice_hash(body) ^ (group * 0x9E3779B97F4A7C15ull)) & (slots - 1);
        int seen = 0;
        while (table[slot] != SIZE_MAX) {
            size_t other = kept_records[table[slot]];
            Slice other_body = {wire + records[other].body_at, records[other].body_size};
            if (group_of[other] == group && same(other_body, body)) {
                seen = 1;
                break;
            }
            slot = (slot + 1) & (slots - 1);
        }
        if (seen) {
            if (kept_counts != NULL) kept_counts[table[slot]]++;
            continue;
        }
        table[slot] = kept;
        if (kept_counts != NULL) kept_counts[kept] = 1;
        kept_records[kept++] = i;
    }
#undef SELECTED
    free(table);
    *out = kept_records;
    if (counts != NULL) *counts = kept_counts;
    *kept_count = kept;
    return 0;
}

/* The records whose body is not a plain string, one per distinct (group, body): Python hashes
 * those bodies, and a request of records without a body (an empty one) would otherwise cost a
 * Python object per record. */
static int structured_bodies(const uint8_t *wire, const Record *records, size_t count,
                             Grouped *grouped) {
    return distinct_bodies(wire, records, count, grouped->group_of, NULL, NULL, SIZE_MAX,
                           &grouped->structured, NULL, &grouped->structured_count);
}

/* structured_bodies for one key of several: `plain` per record, and `others`, how many
 * records are not plain, worked out once for every key. */
static int structured_bodies_of(const uint8_t *wire, const Record *records, size_t count,
                                const uint8_t *plain, size_t others, Grouped *grouped) {
    return distinct_bodies(wire, records, count, grouped->group_of, NULL, plain, others,
                           &grouped->structured, NULL, &grouped->structured_count);
}

/* The records without a pattern from C, one per distinct (group, body), with their counts;
 * `unmasked`: how many records have no pattern, or SIZE_MAX for this to count them. */
static int unmasked_bodies(const uint8_t *wire, const Record *records, size_t count,
                           const uint32_t *pattern_of, size_t unmasked, Grouped *grouped) {
    return distinct_bodies(wire, records, count, grouped->group_of, pattern_of, NULL, unmasked,
                           &grouped->unmasked, &grouped->unmasked_records,
                           &grouped->unmasked_count);
}

/* ------------------------------------------------------------------------------------------ */
/* Theta sketches (GIL released).                                                              */
/*
 * Apache DataSketches' update_theta_sketch.update(int64) hashes the integer's 8 little-endian
 * bytes with MurmurHash3_x64_128 and the default seed 9001, keeps h1 >> 1, and ignores a hash of
 * 0 or of the maximal theta (2**63 - 1). A serialized compact sketch (serial version 3) is an
 * 8-byte preamble (preamble longs, version, family 3, two unused bytes, flags, 16-bit seed
 * hash), the entry count in a second 8-byte word when there is more than one entry, then the
 * entries. Each group's hashes are made into such a sketch here, sorted and without
 * duplicates: an exact sketch of all of them, byte for byte what
 * `update_theta_sketch(lg_k).compact(True).serialize()` gives for the same updates when lg_k is
 * large enough to keep them all (tests/counting/test_wire.py checks it). The aggregator unions
 * one such sketch per value per request into its own, instead of calling update() once per
 * record.
 */

#define THETA_SEED 9001u
#define THETA_MAX 0x7FFFFFFFFFFFFFFFull

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t fmix64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return k;
}

/* MurmurHash3_x64_128's h1 for exactly 8 input bytes (one tail word, no full block). */
static uint64_t murmur3_h1_of_word(uint64_t word, uint64_t seed) {
    uint64_t h1 = seed, h2 = seed;
    uint64_t k1 = word * 0x87c37b91114253d5ull;
    k1 = rotl64(k1, 31) * 0x4cf5ad432745937full;
    h1 ^= k1;
    h1 ^= 8;
    h2 ^= 8;
    h1 += h2;
    h2 += h1;
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    return h1 + h2;
}

static uint16_t theta_seed_hash(void) {
    return (uint16_t)(murmur3_h1_of_word(THETA_SEED, 0) & 0xFFFF);
}

static void insertion_sort(uint64_t *a, size_t n) {
    for (size_t i = 1; i < n; i++) {
        uint64_t x = a[i];
        size_t j = i;
        while (j > 0 && a[j - 1] > x) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

static int compare_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/*
 * Sort n theta hashes, which are spread evenly over [0, 2**63): scatter them by their top bits
 * into about n buckets, then sort each bucket, which holds one or two hashes but for chance.
 * Expected linear; qsort's comparator calls on the whole array cost more than the rest of the
 * tally step. A bucket of more than a few (many records repeating a few messages that share
 * top bits, which a sender could choose on purpose) goes to qsort, so the worst case stays
 * n log n. `scratch` holds n hashes, `counts` 2n + 2 sizes.
 */
static void sort_theta_hashes(uint64_t *a, size_t n, uint64_t *scratch, size_t *counts) {
    if (n < 16) {
        insertion_sort(a, n);
        return;
    }
    int bits = 1;
    while (((size_t)1 << bits) < n) bits++;
    size_t buckets = (size_t)1 << bits;
    int shift = 63 - bits;
    memset(counts, 0, (buckets + 1) * sizeof(size_t));
    for (size_t i = 0; i < n; i++) counts[(a[i] >> shift) + 1]++;
    for (size_t b = 0; b < buckets; b++) counts[b + 1] += counts[b];
    /* Scattering moves each bucket's start to its end: counts[b] becomes where b + 1 starts. */
    for (size_t i = 0; i < n; i++) scratch[counts[a[i] >> shift]++] = a[i];
    size_t start = 0;
    for (size_t b = 0; b < buckets; b++) {
        size_t size = counts[b] - start;
        if (size > 8) {
            qsort(scratch + start, size, sizeof(uint64_t), compare_u64);
        } else {
            insertion_sort(scratch + start, size);
        }
        start = counts[b];
    }
    memcpy(a, scratch, n * sizeof(uint64_t));
}

/*
 * Every group's theta hashes, contiguous per group (group g's from groups[g].first), sorted and
 * without duplicates (groups[g].unique of them). Returns -1 when out of memory.
 */
static int theta_hashes(const uint8_t *wire, const Record *records, size_t count,
                        Grouped *grouped) {
    Group *groups = grouped->groups;
    size_t total = 0, largest = 0;
    for (size_t g = 0; g < grouped->group_count; g++) {
        groups[g].first = total;
        total += groups[g].plain;
        if (groups[g].plain > largest) largest = groups[g].plain;
    }
    /* Twice the largest group, a power of two at most, bounds the sort's buckets. */
    uint64_t *hashes = malloc((total ? total : 1) * sizeof(uint64_t));
    uint64_t *scratch = malloc((largest ? largest : 1) * sizeof(uint64_t));
    size_t *counts = malloc((2 * largest + 2) * sizeof(size_t));
    size_t *filled = calloc(grouped->group_count ? grouped->group_count : 1, sizeof(size_t));
    if (hashes == NULL || scratch == NULL || counts == NULL || filled == NULL) {
        free(hashes);
        free(scratch);
        free(counts);
        free(filled);
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        if (!record_is_plain(wire, &records[i])) continue;
        size_t g = grouped->group_of[i];
        /* The signed message hash (messages.to_signed64) as update(int64) sees it. */
        uint64_t word = records[i].hash ^ 0x8000000000000000ull;
        hashes[groups[g].first + filled[g]++] = murmur3_h1_of_word(word, THETA_SEED) >> 1;
    }
    free(filled);
    for (size_t g = 0; g < grouped->group_count; g++) {
        uint64_t *begin = hashes + groups[g].first;
        sort_theta_hashes(begin, groups[g].plain, scratch, counts);
        size_t unique = 0;
        for (size_t i = 0; i < groups[g].plain; i++) {
            uint64_t hash = begin[i];
            if (hash == 0 || hash == THETA_MAX) continue; /* what the sketch itself ignores */
            if (unique > 0 && begin[unique - 1] == hash) continue;
            begin[unique++] = hash;
        }
        groups[g].unique = unique;
    }
    free(scratch);
    free(counts);
    grouped->hashes = hashes;
    return 0;
}

/*
 * Several keys: a record's theta hash does not depend on the key, so it is made once per request,
 * and the plain records are sorted by it once. Each key's tally then walks the records in that
 * order and drops each hash into its group, where it arrives already sorted: no hash and no sort
 * per key, only the grouping by the key's values.
 */
typedef struct {
    uint64_t hash;  /* theta hash (murmur3 h1 >> 1) of the record's message hash */
    size_t record;  /* the record's index */
} ThetaPair;

typedef struct {
    ThetaPair *pairs; /* the plain records, by hash */
    size_t count;
} ThetaOrder;

static void insertion_sort_pairs(ThetaPair *a, size_t n) {
    for (size_t i = 1; i < n; i++) {
        ThetaPair x = a[i];
        size_t j = i;
        while (j > 0 && a[j - 1].hash > x.hash) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

static int compare_pairs(const void *a, const void *b) {
    uint64_t x = ((const ThetaPair *)a)->hash, y = ((const ThetaPair *)b)->hash;
    return (x > y) - (x < y);
}

/* sort_theta_hashes for pairs: a scatter by the top bits, each bucket sorted on its own. */
static int sort_theta_pairs(ThetaPair *a, size_t n) {
    if (n < 16) {
        insertion_sort_pairs(a, n);
        return 0;
    }
    int bits = 1;
    while (((size_t)1 << bits) < n) bits++;
    size_t buckets = (size_t)1 << bits;
    int shift = 63 - bits;
    ThetaPair *scratch = malloc(n * sizeof(ThetaPair));
    size_t *counts = calloc(buckets + 1, sizeof(size_t));
    if (scratch == NULL || counts == NULL) {
        free(scratch);
        free(counts);
        return -1;
    }
    for (size_t i = 0; i < n; i++) counts[(a[i].hash >> shift) + 1]++;
    for (size_t b = 0; b < buckets; b++) counts[b + 1] += counts[b];
    for (size_t i = 0; i < n; i++) scratch[counts[a[i].hash >> shift]++] = a[i];
    size_t start = 0;
    for (size_t b = 0; b < buckets; b++) {
        size_t size = counts[b] - start;
        if (size > 8) {
            qsort(scratch + start, size, sizeof(ThetaPair), compare_pairs);
        } else {
            insertion_sort_pairs(scratch + start, size);
        }
        start = counts[b];
    }
    memcpy(a, scratch, n * sizeof(ThetaPair));
    free(scratch);
    free(counts);
    return 0;
}

/* The request's plain records by theta hash, leaving out the hashes a sketch ignores. */
static ThetaOrder *theta_order(const uint8_t *wire, const Record *records, size_t count) {
    ThetaOrder *order = malloc(sizeof(ThetaOrder));
    ThetaPair *pairs = malloc((count ? count : 1) * sizeof(ThetaPair));
    if (order == NULL || pairs == NULL) {
        free(order);
        free(pairs);
        return NULL;
    }
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        if (!record_is_plain(wire, &records[i])) continue;
        uint64_t word = records[i].hash ^ 0x8000000000000000ull;
        uint64_t hash = murmur3_h1_of_word(word, THETA_SEED) >> 1;
        if (hash == 0 || hash == THETA_MAX) continue; /* what the sketch itself ignores */
        pairs[n].hash = hash;
        pairs[n].record = i;
        n++;
    }
    if (sort_theta_pairs(pairs, n) < 0) {
        free(order);
        free(pairs);
        return NULL;
    }
    order->pairs = pairs;
    order->count = n;
    return order;
}

/* theta_hashes from a ThetaOrder: the same result, each group's hashes sorted as they come. */
static int theta_hashes_in_order(const ThetaOrder *order, Grouped *grouped) {
    Group *groups = grouped->groups;
    size_t total = 0;
    for (size_t g = 0; g < grouped->group_count; g++) {
        groups[g].first = total;
        groups[g].unique = 0;
        total += groups[g].plain;
    }
    uint64_t *hashes = malloc((total ? total : 1) * sizeof(uint64_t));
    if (hashes == NULL) return -1;
    const size_t *group_of = grouped->group_of;
    for (size_t k = 0; k < order->count; k++) {
        Group *group = &groups[group_of[order->pairs[k].record]];
        uint64_t hash = order->pairs[k].hash;
        uint64_t *begin = hashes + group->first;
        if (group->unique > 0 && begin[group->unique - 1] == hash) continue;
        begin[group->unique++] = hash;
    }
    grouped->hashes = hashes;
    return 0;
}

/* The serialized compact theta sketch of n sorted distinct hashes (n > 0); needs the GIL. */
static PyObject *compact_sketch_bytes(const uint64_t *hashes, size_t n) {
    uint16_t seed_hash = theta_seed_hash(); /* a hash of a constant, once per value sketched */
    size_t preamble = n == 1 ? 8 : 16;
    if (n > ((size_t)PY_SSIZE_T_MAX - preamble) / sizeof(uint64_t)) return PyErr_NoMemory();
    PyObject *blob = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(preamble + n * sizeof(uint64_t)));
    if (blob == NULL) return NULL;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(blob);
    /* flags: read-only (1 << 1), compact (1 << 3), ordered (1 << 4) */
    const uint8_t head[8] = {n == 1 ? 1 : 2, 3, 3, 0, 0, 0x1A, seed_hash & 0xFF, seed_hash >> 8};
    memcpy(out, head, 8);
    if (n > 1) {
        uint32_t count = (uint32_t)n; /* a request holds fewer than 2**32 records */
        const uint8_t words[8] = {count & 0xFF, (count >> 8) & 0xFF, (count >> 16) & 0xFF,
                                  count >> 24, 0, 0, 0, 0};
        memcpy(out + 8, words, 8);
    }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* The entries are little-endian words, as they are in memory here: one copy, where the
     * byte-by-byte loop below cost a fifth of a tally (callgrind). */
    memcpy(out + preamble, hashes, n * sizeof(uint64_t));
#else
    for (size_t i = 0; i < n; i++) {
        uint64_t hash = hashes[i];
        for (int b = 0; b < 8; b++) out[preamble + i * 8 + (size_t)b] = (uint8_t)(hash >> (8 * b));
    }
#endif
    return blob;
}

/* ------------------------------------------------------------------------------------------ */
/* ThetaSet: a window's exact theta hashes of one value, for the aggregator (sketches.py).   */

/*
 * While a value's sketches hold few hashes, DataSketches' union keeps every one of them: it is
 * an exact set, and each request's compact sketch merged into it costs a probe per hash at a
 * place the hash's low bits choose, out of the cache when a window holds many values (several
 * keys). This set holds the same hashes in a table ordered by their top bits, so that a
 * request's sorted hashes probe it front to back, and reads the compact sketches this module
 * makes as they are, without a deserialized copy. It takes at most 7/8 of 2k hashes in the 2k
 * slots the union's own table would have: below the union's first rebuild (past 15/16 of
 * them), so a union handed its hashes holds exactly what it would hold had it taken every
 * sketch itself (sketches.py does that when the set is full).
 */
typedef struct {
    PyObject_HEAD
    uint64_t *slots; /* 0 where free: a theta hash is never 0 */
    int lg_slots;
    int max_lg_slots; /* lg_k + 1 */
    size_t count;
} ThetaSet;

static void theta_set_dealloc(ThetaSet *self) {
    free(self->slots);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *theta_set_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    int lg_k;
    static char *names[] = {"lg_k", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i", names, &lg_k)) return NULL;
    if (lg_k < 4 || lg_k > 26) {
        PyErr_SetString(PyExc_ValueError, "lg_k must be between 4 and 26");
        return NULL;
    }
    ThetaSet *self = (ThetaSet *)type->tp_alloc(type, 0);
    if (self != NULL) self->max_lg_slots = lg_k + 1;
    return (PyObject *)self;
}

/* The most hashes the set takes: 7/8 of its largest table. */
static inline size_t theta_set_limit(const ThetaSet *set) {
    return ((size_t)7 << set->max_lg_slots) / 8;
}

static inline void theta_set_place(uint64_t *slots, int lg_slots, uint64_t hash, size_t *count) {
    size_t mask = ((size_t)1 << lg_slots) - 1;
    size_t slot = (size_t)(hash >> (63 - lg_slots)); /* a theta hash is below 2**63 */
    while (slots[slot] != 0) {
        if (slots[slot] == hash) return;
        slot = (slot + 1) & mask;
    }
    slots[slot] = hash;
    (*count)++;
}

/* Room for `count` hashes (at most the limit): the table at most half full, or its largest;
 * -1 when out of memory. */
static int theta_set_reserve(ThetaSet *set, size_t count) {
    int lg_slots = 4;
    while (((size_t)1 << lg_slots) < 2 * count && lg_slots < set->max_lg_slots) lg_slots++;
    if (set->slots != NULL && lg_slots <= set->lg_slots) return 0;
    uint64_t *slots = calloc((size_t)1 << lg_slots, sizeof(uint64_t));
    if (slots == NULL) return -1;
    size_t placed = 0;
    if (set->slots != NULL) {
        for (size_t i = 0; i < ((size_t)1 << set->lg_slots); i++) {
            if (set->slots[i] != 0) theta_set_place(slots, lg_slots, set->slots[i], &placed);
        }
    }
    free(set->slots);
    set->slots = slots;
    set->lg_slots = lg_slots;
    return 0;
}

/* An entry of a serialized sketch: a little-endian word, as it is in memory here. */
static inline uint64_t sketch_entry(const uint8_t *entries, size_t i) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t entry;
    memcpy(&entry, entries + i * 8, 8); /* one load, where read_fixed64 takes a byte at a time */
    return entry;
#else
    return read_fixed64(entries + i * 8);
#endif
}

/* A serialized compact sketch's hashes when it is exact (its theta the largest) and of the
 * default seed: 1 with *hashes and *n set, 0 for any other sketch. */
static int exact_sketch_hashes(const uint8_t *blob, size_t size, const uint8_t **hashes,
                               size_t *n) {
    if (size < 8 || blob[1] != 3 || blob[2] != 3) return 0; /* serial version 3, theta family */
    uint8_t flags = blob[5];
    if ((flags & 1) || !(flags & (1 << 3))) return 0; /* big-endian, or not compact */
    uint16_t seed_hash = theta_seed_hash();
    if (blob[6] != (seed_hash & 0xFF) || blob[7] != (seed_hash >> 8)) return 0;
    uint8_t preamble = blob[0] & 0x3F;
    if (flags & (1 << 2)) { /* empty */
        *n = 0;
    } else if (preamble == 1 && size == 16) { /* one hash */
        *n = 1;
    } else if (preamble == 2 && size >= 16) {
        *n = (size_t)blob[8] | (size_t)blob[9] << 8 | (size_t)blob[10] << 16 |
             (size_t)blob[11] << 24;
        if (*n > (size - 16) / 8 || size != 16 + *n * 8) return 0;
    } else {
        return 0; /* estimation mode (preamble 3): theta below the largest */
    }
    *hashes = blob + preamble * 8;
    for (size_t i = 0; i < *n; i++) {
        uint64_t hash = sketch_entry(*hashes, i);
        if (hash == 0 || hash >= THETA_MAX) return 0; /* what no exact sketch holds */
    }
    return 1;
}

static PyObject *theta_set_add(ThetaSet *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "add() takes a serialized compact theta sketch");
        return NULL;
    }
    const uint8_t *hashes = NULL;
    size_t n = 0;
    if (!exact_sketch_hashes((const uint8_t *)PyBytes_AS_STRING(arg),
                             (size_t)PyBytes_GET_SIZE(arg), &hashes, &n) ||
        n > theta_set_limit(self) - self->count) {
        Py_RETURN_FALSE; /* left unchanged: this sketch is for the union */
    }
    if (theta_set_reserve(self, self->count + n) < 0) return PyErr_NoMemory();
    for (size_t i = 0; i < n; i++)
        theta_set_place(self->slots, self->lg_slots, sketch_entry(hashes, i), &self->count);
    Py_RETURN_TRUE;
}

static PyObject *theta_set_compact(ThetaSet *self, PyObject *unused) {
    (void)unused;
    if (self->count == 0) {
        PyErr_SetString(PyExc_ValueError, "compact() of an empty ThetaSet");
        return NULL;
    }
    uint64_t *sorted = malloc(self->count * sizeof(uint64_t));
    if (sorted == NULL) return PyErr_NoMemory();
    size_t n = 0;
    for (size_t i = 0; i < ((size_t)1 << self->lg_slots); i++) {
        if (self->slots[i] != 0) sorted[n++] = self->slots[i];
    }
    qsort(sorted, n, sizeof(uint64_t), compare_u64);
    PyObject *blob = compact_sketch_bytes(sorted, n);
    free(sorted);
    return blob;
}

static Py_ssize_t theta_set_length(ThetaSet *self) { return (Py_ssize_t)self->count; }

static PyMethodDef theta_set_methods[] = {
    {"add", (PyCFunction)theta_set_add, METH_O,
     "add(sketch: bytes) -> bool: the hashes of an exact serialized compact theta sketch of\n"
     "the default seed added, True; False, and nothing added, for any other sketch or when\n"
     "its hashes, counted as new, would pass the set's limit"},
    {"compact", (PyCFunction)theta_set_compact, METH_NOARGS,
     "compact() -> bytes: the hashes as a serialized compact theta sketch, ordered"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods theta_set_sequence = {.sq_length = (lenfunc)theta_set_length};

static PyTypeObject ThetaSetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otlp_stats.counting._wire.ThetaSet",
    .tp_doc = "ThetaSet(lg_k): distinct theta hashes, exactly, up to 7/8 of 2**(lg_k + 1).",
    .tp_basicsize = sizeof(ThetaSet),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = theta_set_new,
    .tp_dealloc = (destructor)theta_set_dealloc,
    .tp_methods = theta_set_methods,
    .tp_as_sequence = &theta_set_sequence,
};

/* ------------------------------------------------------------------------------------------ */
/* Patterns (GIL released): each record's body masked by the masker's C rules, once per
 * distinct message of the request.                                                           */

/* What a plain string body that masks to nothing (empty, or blanks only) counts as. */
#define EMPTY_PATTERN "<empty>"

/* A request's patterns: every distinct one once, in `bytes`, and each record's. */
typedef struct {
    uint32_t *pattern_of; /* per record: index into spans, or NO_PATTERN */
    uint32_t *text_at;    /* per record with a pattern: where its text starts in the wire */
    Buf bytes;            /* the patterns, back to back */
    Spans spans;          /* per pattern, where it is in bytes */
    /* Per record first with its body: the bounds its pattern was cut at (CUT_TOKENS,
     * CUT_LENGTH), for the records after it with the same body. */
    uint8_t *cuts_of;
    /* Records whose pattern was cut at max_tokens, at max_length (Scan.pattern_cuts). */
    size_t cut_tokens, cut_length;
} Patterns;

static void patterns_free(Patterns *patterns) {
    free(patterns->pattern_of); /* text_at is in the same block */
    free(patterns->cuts_of);
    free(patterns->bytes.data);
    free(patterns->spans.items);
    *patterns = (Patterns){0};
}

/*
 * The text of a body that is exactly one string_value field holding valid UTF-8, as the
 * Python scanner's record_patterns.string_text has it; 0 for any other body (structured, empty,
 * trailing fields, invalid UTF-8), which Python patterns instead.
 */
static int plain_text(const uint8_t *body, size_t size, const uint8_t **text, size_t *length) {
    if (!plain_body(body, size)) return 0;
    uint64_t n = 0;
    size_t at = 1;
    for (int shift = 0; at < size && at <= 10; shift += 7) {
        uint8_t byte = body[at++];
        n |= (uint64_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) {
            if (n != size - at) return 0;
            if (!valid_utf8(body + at, body + size)) return 0;
            *text = body + at;
            *length = (size_t)n;
            return 1;
        }
    }
    return 0;
}

/* Each thread's masking scratch, kept from one request to the next (made on a thread's first
 * request, freed when the thread ends): made and freed per request, its dozen buffers were most
 * of the allocations a small request's patterns cost. Trimmed as it is used (mask_scratch_trim),
 * so a thread keeps at most KEEP_BYTES per buffer after a hostile message. */
static pthread_key_t scratch_key;

static void scratch_destroy(void *scratch) {
    mask_scratch_free(scratch);
    free(scratch);
}

/* The calling thread's scratch; NULL out of memory. Needs no GIL. */
static MaskScratch *thread_scratch(void) {
    MaskScratch *scratch = pthread_getspecific(scratch_key);
    if (scratch != NULL) return scratch;
    scratch = calloc(1, sizeof *scratch);
    if (scratch != NULL && pthread_setspecific(scratch_key, scratch) != 0) {
        free(scratch);
        return NULL;
    }
    return scratch;
}

/* Slots of an open-addressing table for up to `count` entries: a power of two, twice it. */
static inline size_t table_slots(size_t count) {
    size_t slots = 16;
    while (slots < count * 2) slots *= 2;
    return slots;
}

/* Tables of up to this many slots (requests of up to half as many records) live on the stack:
 * a small request's patterns then call malloc a few times rather than a dozen. */
#define STACK_SLOTS 64

/* The index of `pattern` among the request's patterns, added if new; -1 out of memory. */
static int64_t pattern_index(Patterns *patterns, uint32_t *table, size_t slots, const char *text,
                             size_t length) {
    size_t slot = (size_t)XXH3_64bits_withSeed(text, length, table_seed) & (slots - 1);
    while (table[slot] != NO_PATTERN) {
        Span known = patterns->spans.items[table[slot]];
        if (known.len == length && memcmp(patterns->bytes.data + known.off, text, length) == 0)
            return table[slot];
        slot = (slot + 1) & (slots - 1);
    }
    size_t off = patterns->bytes.len;
    if (buf_put(&patterns->bytes, text, length) || spans_push(&patterns->spans, off, length))
        return -1;
    table[slot] = (uint32_t)(patterns->spans.len - 1);
    return table[slot];
}

/*
 * Every record's pattern: a plain string body's text masked by the built-in rules within the
 * bounds (or, `verbatim`, the text itself, for Python to mask with a team's rules first), once
 * per distinct body: records with the same message hash and the same bytes share the first's,
 * and its cuts, which are counted per record. Returns -1 when out of memory.
 */
static int mask_records(const uint8_t *wire, const Record *records, size_t count,
                        size_t max_tokens, size_t max_length, int verbatim, Patterns *out) {
    size_t slots = table_slots(count);
    uint32_t on_stack[2 * STACK_SLOTS];
    int small = slots <= STACK_SLOTS;
    /* record index by message hash, then pattern index by pattern */
    uint32_t *messages = small ? on_stack : malloc(2 * slots * sizeof(uint32_t));
    uint32_t *patterns = messages == NULL ? NULL : messages + slots;
    /* pattern_of and text_at in one block, freed as pattern_of */
    out->pattern_of = malloc(2 * (count ? count : 1) * sizeof(uint32_t));
    out->text_at = out->pattern_of == NULL ? NULL : out->pattern_of + (count ? count : 1);
    out->cuts_of = malloc(count ? count : 1);
    MaskScratch *scratch = thread_scratch();
    int status = -1;
    uint32_t last = NO_PATTERN; /* the last pattern found: distinct messages often share it */
    if (messages == NULL || patterns == NULL || out->pattern_of == NULL || out->text_at == NULL ||
        out->cuts_of == NULL || scratch == NULL)
        goto done;
    memset(messages, 0xFF, slots * sizeof(uint32_t));
    memset(patterns, 0xFF, slots * sizeof(uint32_t));
    for (size_t i = 0; i < count; i++) {
        const Record *record = &records[i];
        const uint8_t *body = wire + record->body_at;
        out->pattern_of[i] = NO_PATTERN;
        out->text_at[i] = 0; /* read only for records with a pattern */
        if (!plain_body(body, record->body_size)) continue;
        /* Mixed with the secret seed: a sender can choose bodies whose XXH3 share low bits. */
        size_t slot = (size_t)fmix64(record->hash ^ table_seed) & (slots - 1);
        int seen = 0;
        while (messages[slot] != NO_PATTERN) {
            const Record *other = &records[messages[slot]];
            if (other->hash == record->hash && other->body_size == record->body_size &&
                memcmp(wire + other->body_at, body, record->body_size) == 0) {
                out->pattern_of[i] = out->pattern_of[messages[slot]];
                /* The same bytes: the text as far into the body as in the other's. */
                out->text_at[i] = record->body_at + (out->text_at[messages[slot]] - other->body_at);
                int cuts = out->cuts_of[messages[slot]];
                out->cut_tokens += cuts & CUT_TOKENS;
                out->cut_length += (cuts & CUT_LENGTH) >> 1;
                seen = 1;
                break;
            }
            slot = (slot + 1) & (slots - 1);
        }
        if (seen) continue;
        messages[slot] = (uint32_t)i;
        out->cuts_of[i] = 0;
        const uint8_t *text;
        size_t length;
        if (!plain_text(body, record->body_size, &text, &length)) continue;
        const char *pattern = (const char *)text;
        size_t pattern_length = length;
        if (!verbatim) {
            int cuts;
            if (pattern_mask(scratch, (const char *)text, length, max_tokens, max_length,
                             &pattern, &pattern_length, &cuts))
                goto done;
            out->cuts_of[i] = (uint8_t)cuts;
            out->cut_tokens += cuts & CUT_TOKENS;
            out->cut_length += (cuts & CUT_LENGTH) >> 1;
            if (pattern_length == 0) {
                pattern = EMPTY_PATTERN;
                pattern_length = sizeof EMPTY_PATTERN - 1;
            }
        }
        int64_t index = last;
        Span known = last == NO_PATTERN ? (Span){0, 0} : out->spans.items[last];
        if (last == NO_PATTERN || known.len != pattern_length ||
            memcmp(out->bytes.data + known.off, pattern, pattern_length) != 0)
            index = pattern_index(out, patterns, slots, pattern, pattern_length);
        if (index < 0) goto done;
        last = (uint32_t)index;
        out->pattern_of[i] = (uint32_t)index;
        out->text_at[i] = (uint32_t)(text - wire);
        mask_scratch_trim(scratch);
    }
    status = 0;
done:
    if (scratch != NULL) mask_scratch_trim(scratch); /* also after a failed mask */
    if (!small) free(messages);
    return status;
}

/* One (group, pattern) of a tally: its records and the record whose text is the smallest. */
typedef struct {
    size_t group;
    uint32_t pattern;
    size_t records;
    size_t example; /* a record index */
} PatternEntry;

typedef struct {
    PatternEntry *entries;
    size_t count;
} PatternEntries;

/* A record's text (one with a pattern), from where mask_records found it. */
static inline const uint8_t *record_text(const uint8_t *wire, const Record *records,
                                         const Patterns *patterns, size_t i, size_t *length) {
    *length = records[i].body_at + records[i].body_size - patterns->text_at[i];
    return wire + patterns->text_at[i];
}

/* Memory order, as the Python side compares examples by their UTF-8 bytes. */
static int text_before(const uint8_t *wire, const Record *records, const Patterns *patterns,
                       size_t a, size_t b) {
    size_t la, lb;
    const uint8_t *ta = record_text(wire, records, patterns, a, &la);
    const uint8_t *tb = record_text(wire, records, patterns, b, &lb);
    int order = memcmp(ta, tb, la < lb ? la : lb);
    return order < 0 || (order == 0 && la < lb);
}

/* One more record of an entry: counted, and its text the example if it is the smallest yet. */
static inline void count_entry(const uint8_t *wire, const Record *records,
                               const Patterns *patterns, PatternEntry *entry, size_t i) {
    entry->records++;
    if (entry->example != i && text_before(wire, records, patterns, i, entry->example))
        entry->example = i;
}

/* The first entry of a (group, pattern), at the end of the entries; its index. */
static inline size_t new_entry(PatternEntries *out, size_t group, uint32_t pattern, size_t i) {
    out->entries[out->count] = (PatternEntry){group, pattern, 0, i};
    return out->count++;
}

/*
 * group_patterns when the request has few values times few patterns (the usual case): each
 * (group, pattern) finds its entry in a table with a slot for every pair, with no hashing, and
 * no table of twice the records to fill and probe (per key, with several).
 */
static int group_patterns_direct(const uint8_t *wire, const Record *records, size_t count,
                                 const Patterns *patterns, const Grouped *grouped,
                                 PatternEntries *out) {
    size_t npatterns = patterns->spans.len;
    size_t pairs = grouped->group_count * npatterns;
    uint32_t *slot_of = calloc(pairs ? pairs : 1, sizeof(uint32_t)); /* entry + 1, 0: none */
    if (slot_of == NULL) return -1;
    const uint32_t *pattern_of = patterns->pattern_of;
    for (size_t i = 0; i < count; i++) {
        uint32_t pattern = pattern_of[i];
        if (pattern == NO_PATTERN) continue;
        size_t group = grouped->group_of[i];
        uint32_t *slot = &slot_of[group * npatterns + pattern];
        if (*slot == 0) *slot = (uint32_t)new_entry(out, group, pattern, i) + 1;
        count_entry(wire, records, patterns, &out->entries[*slot - 1], i);
    }
    free(slot_of);
    return 0;
}

/* Per (group, pattern), in the order each first occurs: records and smallest example. */
static int group_patterns(const uint8_t *wire, const Record *records, size_t count,
                          const Patterns *patterns, const Grouped *grouped,
                          PatternEntries *out) {
    out->entries = malloc((count ? count : 1) * sizeof(PatternEntry));
    if (out->entries == NULL) return -1;
    /* A table of pairs no bigger than the records (a request of fewer than 2**32 bytes has
     * fewer than 2**32 records, so an entry's index + 1 fits 32 bits). */
    if (grouped->group_count > 0 && patterns->spans.len <= count / grouped->group_count)
        return group_patterns_direct(wire, records, count, patterns, grouped, out);
    const uint32_t *pattern_of = patterns->pattern_of;
    size_t slots = table_slots(count);
    size_t on_stack[STACK_SLOTS];
    int small = slots <= STACK_SLOTS;
    size_t *table = small ? on_stack : malloc(slots * sizeof(size_t));
    if (table == NULL) return -1;
    for (size_t i = 0; i < slots; i++) table[i] = SIZE_MAX;
    size_t last = SIZE_MAX; /* consecutive records often repeat a (group, pattern) */
    for (size_t i = 0; i < count; i++) {
        uint32_t pattern = pattern_of[i];
        if (pattern == NO_PATTERN) continue;
        size_t group = grouped->group_of[i];
        size_t entry;
        if (last != SIZE_MAX && out->entries[last].group == group &&
            out->entries[last].pattern == pattern) {
            entry = last;
        } else {
            size_t slot = (size_t)fmix64(((uint64_t)group << 32 ^ pattern) ^ table_seed) &
                          (slots - 1);
            while (table[slot] != SIZE_MAX && !(out->entries[table[slot]].group == group &&
                                                out->entries[table[slot]].pattern == pattern))
                slot = (slot + 1) & (slots - 1);
            if (table[slot] == SIZE_MAX) table[slot] = new_entry(out, group, pattern, i);
            entry = last = table[slot];
        }
        count_entry(wire, records, patterns, &out->entries[entry], i);
    }
    if (!small) free(table);
    return 0;
}


/* ------------------------------------------------------------------------------------------ */
/* Python entry points.                                                                        */

static PyObject *MalformedWire;

/* The result of check(): the request's bytes and, per record, what it counts by. */
typedef struct {
    PyObject_HEAD
    PyObject *wire; /* the bytes the records point into; immutable, so safe without the GIL */
    Record *records;
    uint64_t *times; /* NULL unless check() was asked for times */
    size_t count;
    uint32_t *numbers;      /* per record, nkeys value numbers when nkeys > 1, else NULL */
    ValueNumbers *numbered; /* per key when nkeys > 1: the values those numbers stand for */
    size_t nkeys;
    /* Several keys: the plain records' theta hashes, sorted, made by the first tally and
     * shared by every key's (ThetaOrder); NULL until then, and always with one key. */
    ThetaOrder *order;
    /* Patterns, when check() was asked to count them (has_patterns); made in its walk. */
    int has_patterns;
    Patterns patterns;
} Scan;

static void scan_dealloc(Scan *self) {
    if (self->order != NULL) free(self->order->pairs);
    free(self->order);
    free(self->records);
    free(self->numbers);
    numbers_free(self->numbered, self->nkeys);
    free(self->times);
    patterns_free(&self->patterns);
    Py_XDECREF(self->wire);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *scan_records(Scan *self, void *closure) {
    (void)closure;
    return PyLong_FromSize_t(self->count);
}

/* (0, 0), made once: most requests have nothing cut, and this is read for every request. */
static PyObject *NO_CUTS;

static PyObject *scan_pattern_cuts(Scan *self, void *closure) {
    (void)closure;
    size_t tokens = self->patterns.cut_tokens, length = self->patterns.cut_length;
    if (tokens == 0 && length == 0) return Py_NewRef(NO_CUTS);
    PyObject *first = PyLong_FromSize_t(tokens), *second = PyLong_FromSize_t(length);
    PyObject *pair = first && second ? PyTuple_Pack(2, first, second) : NULL;
    Py_XDECREF(first);
    Py_XDECREF(second);
    return pair;
}

/* add_pattern_cuts(cuts, records): records of a message Python masked (a team's rules, invalid
 * UTF-8, a structured body), cut at `cuts` (CUT_TOKENS | CUT_LENGTH), into pattern_cuts. */
static PyObject *scan_add_pattern_cuts(Scan *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "add_pattern_cuts(cuts: int, records: int)");
        return NULL;
    }
    long cuts = PyLong_AsLong(args[0]);
    Py_ssize_t records = PyLong_AsSsize_t(args[1]);
    if ((cuts == -1 || records == -1) && PyErr_Occurred()) return NULL;
    if (records < 0) {
        PyErr_SetString(PyExc_ValueError, "records must not be negative");
        return NULL;
    }
    if (cuts & CUT_TOKENS) self->patterns.cut_tokens += (size_t)records;
    if (cuts & CUT_LENGTH) self->patterns.cut_length += (size_t)records;
    Py_RETURN_NONE;
}

static PyMethodDef scan_methods[] = {
    {"add_pattern_cuts", (PyCFunction)(void (*)(void))scan_add_pattern_cuts, METH_FASTCALL,
     "add_pattern_cuts(cuts: int, records: int) -> None: records of a message masked in "
     "Python, cut at `cuts` (1: max_tokens, 2: max_length), added to pattern_cuts"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef scan_getset[] = {
    {"records", (getter)scan_records, NULL, "the request's number of log records", NULL},
    {"pattern_cuts", (getter)scan_pattern_cuts, NULL,
     "(records, records): how many records' patterns were cut at max_tokens, at max_length: "
     "those check() masked with the C rules, and those add_pattern_cuts() added",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ScanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otlp_stats.counting._wire.Scan",
    .tp_doc = "A checked request: its bytes and, per log record, what it counts by.",
    .tp_basicsize = sizeof(Scan),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)scan_dealloc,
    .tp_getset = scan_getset,
    .tp_methods = scan_methods,
};

PyDoc_STRVAR(check_doc,
             "check(wire: bytes, key: bytes | tuple[bytes, ...], times: bool = False,\n"
             "      patterns: tuple[int, int, bool] | None = None) -> Scan\n\n"
             "Validate a serialized ExportLogsServiceRequest as the view's decode would, raising\n"
             "MalformedWire if it is malformed, and note per log record the raw value of\n"
             "attribute `key` (record > scope > resource) and its body, with the XXH3-64 of a\n"
             "plain string body: everything tally() needs, in one walk over the bytes. With\n"
             "`times`, also each record's time for tally_windows(). With a tuple of keys (at\n"
             "most 16, distinct), every key's value in the same walk; tally() counts by the\n"
             "first until select_key() picks another. With `patterns` (max_tokens, max_length,\n"
             "verbatim), also each plain string body's pattern, masked by the masker's C rules\n"
             "within those bounds (verbatim: its text as it is, for Python to mask), once per\n"
             "distinct body; tally() then gives each value's patterns.");

/* The key or keys check() was given, into the walk; -1 with an exception set if unfit. */
static int take_keys(Walk *walk, PyObject *keys) {
    if (PyBytes_Check(keys)) {
        walk->nkeys = 1;
        walk->keys[0] = (const uint8_t *)PyBytes_AS_STRING(keys);
        walk->key_lens[0] = (size_t)PyBytes_GET_SIZE(keys);
    } else if (PyTuple_Check(keys) && PyTuple_GET_SIZE(keys) >= 1 &&
               PyTuple_GET_SIZE(keys) <= MAX_KEYS) {
        walk->nkeys = (size_t)PyTuple_GET_SIZE(keys);
        for (size_t i = 0; i < walk->nkeys; i++) {
            PyObject *key = PyTuple_GET_ITEM(keys, (Py_ssize_t)i);
            if (!PyBytes_Check(key)) {
                PyErr_SetString(PyExc_TypeError, "check() keys must be bytes");
                return -1;
            }
            walk->keys[i] = (const uint8_t *)PyBytes_AS_STRING(key);
            walk->key_lens[i] = (size_t)PyBytes_GET_SIZE(key);
        }
    } else {
        PyErr_SetString(PyExc_TypeError, "check() takes a key (bytes) or a tuple of 1-16 keys");
        return -1;
    }
    walk->key = walk->keys[0];
    walk->key_len = walk->key_lens[0];
    for (size_t i = 0; i < walk->nkeys; i++) {
        uint16_t bit = (uint16_t)(1u << i);
        if (walk->key_lens[i] < KEY_LENGTHS) {
            walk->keys_of_length[walk->key_lens[i]] |= bit;
        } else {
            walk->long_keys |= bit;
        }
    }
    return 0;
}

/* check()'s `patterns` argument: None, or (max_tokens, max_length, verbatim). 0: not counted,
 * 1: counted, -1 with an exception set. */
typedef struct {
    size_t max_tokens, max_length;
    int verbatim;
} MaskBounds;

static int take_mask_bounds(PyObject *arg, MaskBounds *bounds) {
    if (arg == Py_None) return 0;
    if (!PyTuple_Check(arg) || PyTuple_GET_SIZE(arg) != 3) {
        PyErr_SetString(PyExc_TypeError,
                        "check() patterns must be None or (max_tokens, max_length, verbatim)");
        return -1;
    }
    Py_ssize_t tokens = PyLong_AsSsize_t(PyTuple_GET_ITEM(arg, 0));
    Py_ssize_t length = PyLong_AsSsize_t(PyTuple_GET_ITEM(arg, 1));
    int verbatim = PyObject_IsTrue(PyTuple_GET_ITEM(arg, 2));
    if (PyErr_Occurred() || verbatim < 0) return -1;
    if (tokens < 1 || length < MASK_LEN) {
        PyErr_SetString(PyExc_ValueError, "max_tokens must be at least 1 and max_length at least 3");
        return -1;
    }
    bounds->max_tokens = (size_t)tokens;
    bounds->max_length = (size_t)length;
    bounds->verbatim = verbatim;
    return 1;
}

static PyObject *check(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs < 2 || nargs > 4 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "check() takes (wire: bytes, key: bytes, times: bool, patterns)");
        return NULL;
    }
    int timed = nargs >= 3 ? PyObject_IsTrue(args[2]) : 0;
    if (timed < 0) return NULL;
    MaskBounds bounds = {0};
    int patterned = nargs == 4 ? take_mask_bounds(args[3], &bounds) : 0;
    if (patterned < 0) return NULL;
    PyObject *wire = args[0];
    Py_ssize_t size = PyBytes_GET_SIZE(wire);
    if ((uint64_t)size > UINT32_MAX) {
        PyErr_SetString(MalformedWire, "request of 4 GiB or more");
        return NULL;
    }
    Walk walk = {0};
    walk.wire = (const uint8_t *)PyBytes_AS_STRING(wire);
    if (take_keys(&walk, args[1]) < 0) return NULL;
    if (walk.nkeys > 1 && (walk.numbered = calloc(walk.nkeys, sizeof(ValueNumbers))) == NULL)
        return PyErr_NoMemory();
    walk.timed = timed;
    Patterns patterns = {0};
    int status, masked = 0;
    Py_BEGIN_ALLOW_THREADS
    status = walk_request(&walk, walk.wire, size);
    if (status == 0 && patterned)
        masked = mask_records(walk.wire, walk.records, walk.count, bounds.max_tokens,
                              bounds.max_length, bounds.verbatim, &patterns);
    Py_END_ALLOW_THREADS
    if (status < 0 || masked < 0) {
        free(walk.records);
        free(walk.times);
        free(walk.numbers);
        numbers_free(walk.numbered, walk.nkeys);
        patterns_free(&patterns);
        if (walk.out_of_memory || masked < 0) return PyErr_NoMemory();
        PyErr_SetString(MalformedWire, walk.error ? walk.error : "malformed");
        return NULL;
    }
    if (timed && walk.times == NULL) walk.times = malloc(sizeof(uint64_t)); /* no records */
    Scan *scan = PyObject_New(Scan, &ScanType);
    if (scan == NULL || (timed && walk.times == NULL)) {
        free(walk.records);
        free(walk.times);
        free(walk.numbers);
        numbers_free(walk.numbered, walk.nkeys);
        patterns_free(&patterns);
        Py_XDECREF(scan);
        return scan == NULL ? NULL : PyErr_NoMemory();
    }
    scan->wire = Py_NewRef(wire);
    scan->times = walk.times;
    scan->records = walk.records;
    scan->count = walk.count;
    scan->numbers = walk.numbers;
    scan->numbered = walk.numbered;
    scan->nkeys = walk.nkeys;
    scan->order = NULL;
    scan->has_patterns = patterned;
    scan->patterns = patterns;
    return (PyObject *)scan;
}

PyDoc_STRVAR(select_key_doc,
             "select_key(scan: Scan, index: int) -> None\n\n"
             "Make tally() and tally_windows() count by the scan's key `index` (of the keys\n"
             "check() was given): each record's value for it, noted in the same walk.");

static PyObject *select_key(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !PyObject_TypeCheck(args[0], &ScanType)) {
        PyErr_SetString(PyExc_TypeError, "select_key() takes (scan, index)");
        return NULL;
    }
    Scan *scan = (Scan *)args[0];
    Py_ssize_t index = PyLong_AsSsize_t(args[1]);
    if (index == -1 && PyErr_Occurred()) return NULL;
    if (index < 0 || (size_t)index >= scan->nkeys) {
        PyErr_SetString(PyExc_IndexError, "select_key(): no such key in this scan");
        return NULL;
    }
    if (scan->numbered == NULL) Py_RETURN_NONE; /* one key: always selected */
    const uint8_t *wire = (const uint8_t *)PyBytes_AS_STRING(scan->wire);
    const ValueNumbers *numbered = &scan->numbered[index];
    for (size_t r = 0; r < scan->count; r++) {
        Slice value = numbered->values[scan->numbers[r * scan->nkeys + (size_t)index]];
        scan->records[r].value_at = value.size < 0 ? 0 : (uint32_t)(value.data - wire);
        scan->records[r].value_size = (int32_t)value.size;
    }
    Py_RETURN_NONE;
}

/* theta_hashes, by the scan's shared order when it has several keys (made on first use). */
static int scan_theta_hashes(Scan *scan, const uint8_t *wire, Grouped *grouped) {
    if (scan->nkeys <= 1) return theta_hashes(wire, scan->records, scan->count, grouped);
    if (scan->order == NULL) scan->order = theta_order(wire, scan->records, scan->count);
    if (scan->order == NULL) return -1;
    return theta_hashes_in_order(scan->order, grouped);
}

static PyObject *slice_bytes(Slice slice) {
    if (slice.size < 0) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)slice.data, slice.size);
}

static PyObject *group_tuple(const Group *group, const uint64_t *hashes, int timed) {
    PyObject *value = slice_bytes(group->value);
    PyObject *records = PyLong_FromSize_t(group->size);
    PyObject *sketch = NULL;
    if (group->unique == 0) {
        sketch = Py_NewRef(Py_None);
    } else {
        sketch = compact_sketch_bytes(hashes + group->first, group->unique);
    }
    PyObject *tuple = NULL;
    if (value && records && sketch) {
        if (timed) {
            PyObject *window = PyLong_FromUnsignedLongLong(group->window);
            tuple = window ? PyTuple_Pack(4, window, value, records, sketch) : NULL;
            Py_XDECREF(window);
        } else {
            tuple = PyTuple_Pack(3, value, records, sketch);
        }
    }
    Py_XDECREF(value);
    Py_XDECREF(records);
    Py_XDECREF(sketch);
    return tuple;
}

/* patterns/tally.py's PatternCount, taken at import: the tally's patterns are made as it,
 * ready for the aggregator to merge, so Python builds nothing per pattern. */
static PyTypeObject *PatternCountType;

/* A PatternCount(pattern, records, example), stealing `records` and `example`: a NamedTuple is a
 * tuple subclass without a dict, so it is allocated and filled as tuple's own subtype_new does,
 * without calling its Python __new__. */
static PyObject *pattern_count(PyObject *pattern, PyObject *records, PyObject *example) {
    PyObject *count = NULL;
    if (records != NULL && example != NULL)
        count = PatternCountType->tp_alloc(PatternCountType, 3);
    if (count == NULL) {
        Py_XDECREF(records);
        Py_XDECREF(example);
        return NULL;
    }
    PyTuple_SET_ITEM(count, 0, Py_NewRef(pattern));
    PyTuple_SET_ITEM(count, 1, records);
    PyTuple_SET_ITEM(count, 2, example);
    return count;
}

/* Recent patterns' str, by a hash of their UTF-8 bytes, one per slot (a new one replaces the
 * old): most requests repeat patterns seen before, and the str kept has its hash computed and
 * is the very key the aggregator's tables hold, so a repeated pattern is neither decoded nor
 * hashed nor compared byte by byte again. Touched only with the GIL held. At most
 * PATTERN_CACHE patterns of at most the masker's max_length bytes each. */
#define PATTERN_CACHE 1024

typedef struct {
    uint64_t hash;
    size_t length;
    char *bytes;
    PyObject *text;
} CachedPattern;

static CachedPattern pattern_cache[PATTERN_CACHE];

/* The pattern's str, a new reference; NULL with an exception set. */
static PyObject *pattern_text(const char *bytes, size_t length) {
    uint64_t hash = XXH3_64bits_withSeed(bytes, length, table_seed);
    CachedPattern *slot = &pattern_cache[hash & (PATTERN_CACHE - 1)];
    if (slot->text != NULL && slot->hash == hash && slot->length == length &&
        memcmp(slot->bytes, bytes, length) == 0)
        return Py_NewRef(slot->text);
    PyObject *text = PyUnicode_DecodeUTF8(bytes, (Py_ssize_t)length, NULL);
    char *copy = text == NULL ? NULL : malloc(length ? length : 1);
    if (copy != NULL) { /* out of memory: the str is still good, only not kept */
        memcpy(copy, bytes, length);
        free(slot->bytes);
        Py_XSETREF(slot->text, Py_NewRef(text));
        slot->bytes = copy;
        slot->hash = hash;
        slot->length = length;
    }
    return text;
}

/* The pattern entries per group, in the groups' order: a list per group of its
 * PatternCount(pattern, records, example), in the order the entries first occur; one str per
 * distinct pattern, shared by its entries and, while pattern_text keeps it, by later requests;
 * examples decoded strictly (C patterns only valid UTF-8). */
static PyObject *pattern_lists(const Scan *scan, const Grouped *grouped,
                               const PatternEntries *entries) {
    const uint8_t *wire = (const uint8_t *)PyBytes_AS_STRING(scan->wire);
    const Patterns *patterns = &scan->patterns;
    PyObject *lists = PyList_New((Py_ssize_t)grouped->group_count);
    PyObject *on_stack[STACK_SLOTS] = {NULL};
    int small = patterns->spans.len <= STACK_SLOTS;
    PyObject **texts =
        small ? on_stack : calloc(patterns->spans.len ? patterns->spans.len : 1, sizeof(PyObject *));
    /* Each group's entries, then where its list is filled to: every list made at its size. */
    size_t counts_on_stack[STACK_SLOTS] = {0};
    size_t groups = grouped->group_count;
    size_t *filled = groups <= STACK_SLOTS ? counts_on_stack : calloc(groups, sizeof(size_t));
    PyObject *result = NULL;
    if (lists == NULL || texts == NULL || filled == NULL) goto done;
    for (size_t k = 0; k < entries->count; k++) filled[entries->entries[k].group]++;
    for (size_t g = 0; g < groups; g++) {
        PyObject *list = PyList_New((Py_ssize_t)filled[g]);
        if (list == NULL) goto done;
        PyList_SET_ITEM(lists, (Py_ssize_t)g, list);
        filled[g] = 0;
    }
    for (size_t k = 0; k < entries->count; k++) {
        const PatternEntry *entry = &entries->entries[k];
        if (texts[entry->pattern] == NULL) {
            Span span = patterns->spans.items[entry->pattern];
            texts[entry->pattern] = pattern_text(patterns->bytes.data + span.off, span.len);
            if (texts[entry->pattern] == NULL) goto done;
        }
        size_t length;
        const uint8_t *text =
            record_text(wire, scan->records, &scan->patterns, entry->example, &length);
        PyObject *count = pattern_count(
            texts[entry->pattern], PyLong_FromSize_t(entry->records),
            PyUnicode_DecodeUTF8((const char *)text, (Py_ssize_t)length, NULL));
        if (count == NULL) goto done;
        PyList_SET_ITEM(PyList_GET_ITEM(lists, (Py_ssize_t)entry->group),
                        (Py_ssize_t)filled[entry->group]++, count);
    }
    result = Py_NewRef(lists);
done:
    if (texts != NULL)
        for (size_t p = 0; p < patterns->spans.len; p++) Py_XDECREF(texts[p]);
    if (!small) free(texts);
    if (filled != counts_on_stack) free(filled);
    Py_XDECREF(lists);
    return result;
}

/* The records Python patterns, one per distinct (group, body): (group index, body, records). */
static PyObject *unmasked_tuples(const Scan *scan, const Grouped *grouped) {
    const uint8_t *wire = (const uint8_t *)PyBytes_AS_STRING(scan->wire);
    PyObject *list = PyList_New((Py_ssize_t)grouped->unmasked_count);
    if (list == NULL) return NULL;
    for (size_t k = 0; k < grouped->unmasked_count; k++) {
        const Record *record = &scan->records[grouped->unmasked[k]];
        PyObject *tuple = Py_BuildValue(
            "(ny#n)", (Py_ssize_t)grouped->group_of[grouped->unmasked[k]],
            (const char *)wire + record->body_at, (Py_ssize_t)record->body_size,
            (Py_ssize_t)grouped->unmasked_records[k]);
        if (tuple == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)k, tuple);
    }
    return list;
}

/* Per group: (raw value or None, records, compact theta sketch of its plain string bodies'
 * message hashes or None); the other bodies, once per group they occur in: (index of the
 * group in the first list, raw body); and, patterns counted, pattern_lists and
 * unmasked_tuples (two empty lists when not). */
static PyObject *build_result(const Scan *scan, const Grouped *grouped,
                              const PatternEntries *entries, int timed) {
    const uint8_t *wire = (const uint8_t *)PyBytes_AS_STRING(scan->wire);
    PyObject *groups = PyList_New((Py_ssize_t)grouped->group_count);
    PyObject *structured = PyList_New(0);
    PyObject *patterned = NULL, *unmasked = NULL;
    PyObject *result = NULL;
    if (groups == NULL || structured == NULL) goto done;
    for (size_t g = 0; g < grouped->group_count; g++) {
        PyObject *tuple = group_tuple(&grouped->groups[g], grouped->hashes, timed);
        if (tuple == NULL) goto done;
        PyList_SET_ITEM(groups, (Py_ssize_t)g, tuple);
    }
    for (size_t k = 0; k < grouped->structured_count; k++) {
        size_t i = grouped->structured[k];
        const Record *record = &scan->records[i];
        PyObject *index = PyLong_FromSize_t(grouped->group_of[i]);
        PyObject *body = PyBytes_FromStringAndSize((const char *)wire + record->body_at,
                                                   (Py_ssize_t)record->body_size);
        PyObject *pair = (index && body) ? PyTuple_Pack(2, index, body) : NULL;
        Py_XDECREF(index);
        Py_XDECREF(body);
        if (pair == NULL) goto done;
        int appended = PyList_Append(structured, pair);
        Py_DECREF(pair);
        if (appended < 0) goto done;
    }
    patterned = scan->has_patterns ? pattern_lists(scan, grouped, entries) : PyList_New(0);
    unmasked = scan->has_patterns ? unmasked_tuples(scan, grouped) : PyList_New(0);
    if (patterned == NULL || unmasked == NULL) goto done;
    result = PyTuple_Pack(4, groups, structured, patterned, unmasked);
done:
    Py_XDECREF(groups);
    Py_XDECREF(structured);
    Py_XDECREF(patterned);
    Py_XDECREF(unmasked);
    return result;
}

/* Patterns counted: each (group, pattern)'s records and example, and the records Python
 * patterns (`unmasked` of them, or SIZE_MAX for unmasked_bodies to count them); nothing when
 * not. -1 when out of memory. */
static int scan_patterns(const Scan *scan, const uint8_t *wire, size_t unmasked,
                         Grouped *grouped, PatternEntries *entries) {
    if (!scan->has_patterns) return 0;
    if (group_patterns(wire, scan->records, scan->count, &scan->patterns, grouped, entries) < 0)
        return -1;
    return unmasked_bodies(wire, scan->records, scan->count, scan->patterns.pattern_of, unmasked,
                           grouped);
}

PyDoc_STRVAR(tally_doc,
             "tally(scan: Scan) -> tuple[list[tuple[bytes | None, int, bytes | None]],\n"
             "                           list[tuple[int, bytes]],\n"
             "                           list[list[PatternCount]],\n"
             "                           list[tuple[int, bytes, int]]]\n\n"
             "Group a checked request's records by the raw value of its attribute: per value,\n"
             "its record count and a serialized compact theta sketch of the message hashes\n"
             "(signed XXH3-64) of its plain string bodies, or None if it has none; and every\n"
             "other body, once per value it occurs under, as (index of the value's group, raw\n"
             "body), for the caller to hash. Then, for a Scan checked with patterns, per value\n"
             "(in the first list's order) its PatternCount(pattern, records, smallest message)\n"
             "per pattern, in the order each first occurs, and the\n"
             "bodies C gave no pattern (not one string field of valid UTF-8), once per (value,\n"
             "body) with their records: (group index, raw body, records); else two empty lists.");

static PyObject *tally(PyObject *module, PyObject *arg) {
    (void)module;
    if (!PyObject_TypeCheck(arg, &ScanType)) {
        PyErr_SetString(PyExc_TypeError, "tally() takes the Scan that check() returned");
        return NULL;
    }
    Scan *scan = (Scan *)arg;
    const uint8_t *wire = (const uint8_t *)PyBytes_AS_STRING(scan->wire);
    Grouped grouped = {0};
    PatternEntries entries = {0};
    int status;
    /* Grouping and hashing in one release of the GIL: each release is a chance for another
     * thread to take it, and getting it back a wait. */
    Py_BEGIN_ALLOW_THREADS
    status = group_records(wire, scan->records, scan->count, &grouped);
    if (status == 0) status = scan_theta_hashes(scan, wire, &grouped);
    if (status == 0) status = structured_bodies(wire, scan->records, scan->count, &grouped);
    if (status == 0) status = scan_patterns(scan, wire, SIZE_MAX, &grouped, &entries);
    Py_END_ALLOW_THREADS
    PyObject *result = status == 0 ? build_result(scan, &grouped, &entries, 0) : PyErr_NoMemory();
    grouped_free(&grouped);
    free(entries.entries);
    return result;
}

PyDoc_STRVAR(tally_keys_doc,
             "tally_keys(scan: Scan) -> list[tuple[list[tuple[bytes | None, int, bytes | None]],\n"
             "                                    list[tuple[int, bytes]],\n"
             "                                    list[list[PatternCount]],\n"
             "                                    list[tuple[int, bytes, int]]]]\n\n"
             "tally() for every key check() was given, in their order, in one call: each key's\n"
             "grouping straight from the values the walk noted, the records' theta hashes made\n"
             "and sorted once for all keys, the patterns check() made shared by all keys and\n"
             "grouped per key, and the GIL released once.");

static PyObject *tally_keys(PyObject *module, PyObject *arg) {
    if (!PyObject_TypeCheck(arg, &ScanType)) {
        PyErr_SetString(PyExc_TypeError, "tally_keys() takes the Scan that check() returned");
        return NULL;
    }
    Scan *scan = (Scan *)arg;
    if (scan->nkeys <= 1) { /* one key: its tally, alone in the list */
        PyObject *one = tally(module, arg);
        if (one == NULL) return NULL;
        PyObject *list = PyList_New(1);
        if (list == NULL) {
            Py_DECREF(one);
            return NULL;
        }
        PyList_SET_ITEM(list, 0, one);
        return list;
    }
    const uint8_t *wire = (const uint8_t *)PyBytes_AS_STRING(scan->wire);
    size_t nkeys = scan->nkeys;
    Grouped grouped[MAX_KEYS];
    PatternEntries entries[MAX_KEYS];
    memset(grouped, 0, sizeof(grouped));
    memset(entries, 0, sizeof(entries));
    int status = 0;
    /* Whether each record's body is plain, read once for every key's grouping. */
    uint8_t *plain = malloc(scan->count ? scan->count : 1);
    if (plain == NULL) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    size_t others = 0, unmasked = 0;
    for (size_t i = 0; i < scan->count; i++) {
        plain[i] = (uint8_t)record_is_plain(wire, &scan->records[i]);
        others += (size_t)!plain[i];
    }
    if (scan->has_patterns) {
        for (size_t i = 0; i < scan->count; i++)
            unmasked += (size_t)(scan->patterns.pattern_of[i] == NO_PATTERN);
    }
    if (scan->order == NULL) scan->order = theta_order(wire, scan->records, scan->count);
    if (scan->order == NULL) status = -1;
    for (size_t k = 0; k < nkeys && status == 0; k++) {
        /* No records, no numbers (NULL). */
        const uint32_t *numbers = scan->numbers == NULL ? NULL : scan->numbers + k;
        status = group_by_numbers(&scan->numbered[k], numbers, nkeys, plain, scan->count,
                                  &grouped[k]);
        if (status == 0) status = theta_hashes_in_order(scan->order, &grouped[k]);
        if (status == 0) {
            status = structured_bodies_of(wire, scan->records, scan->count, plain, others,
                                          &grouped[k]);
        }
        if (status == 0) status = scan_patterns(scan, wire, unmasked, &grouped[k], &entries[k]);
    }
    Py_END_ALLOW_THREADS
    free(plain);
    PyObject *result = status == 0 ? PyList_New((Py_ssize_t)nkeys) : PyErr_NoMemory();
    for (size_t k = 0; k < nkeys && result != NULL; k++) {
        PyObject *tallied = build_result(scan, &grouped[k], &entries[k], 0);
        if (tallied == NULL) {
            Py_CLEAR(result);
        } else {
            PyList_SET_ITEM(result, (Py_ssize_t)k, tallied);
        }
    }
    for (size_t k = 0; k < nkeys; k++) {
        grouped_free(&grouped[k]);
        free(entries[k].entries);
    }
    return result;
}

/*
 * Each record's window under event time: its time, else (no time, or one more than `skew`
 * ahead of its request's arrival: a broken clock or a bit flip) the arrival, divided by the
 * window length, all in nanoseconds. Counts the records put at arrival for either reason.
 */
static void window_of_records(const uint64_t *times, size_t count, uint64_t arrival,
                              uint64_t window, uint64_t skew, uint64_t *windows,
                              size_t *future, size_t *missing) {
    uint64_t latest = arrival > UINT64_MAX - skew ? UINT64_MAX : arrival + skew;
    /* The last window worked out: records of a request are mostly close in time, and a 64-bit
     * division per record would cost more than the rest of this loop. */
    uint64_t index = arrival / window, start = index * window;
    for (size_t i = 0; i < count; i++) {
        uint64_t time = times[i];
        if (time == 0) {
            time = arrival;
            (*missing)++;
        } else if (time > latest) {
            time = arrival;
            (*future)++;
        }
        if (time < start || time - start >= window) {
            index = time / window;
            start = index * window;
        }
        windows[i] = index;
    }
}

PyDoc_STRVAR(tally_windows_doc,
             "tally_windows(scan: Scan, arrival_ns: int, window_ns: int, max_skew_ns: int)\n"
             "    -> tuple[list[tuple[int, bytes | None, int, bytes | None]],\n"
             "             list[tuple[int, bytes]], int, int,\n"
             "             list[list[PatternCount]], list[tuple[int, bytes, int]]]\n\n"
             "tally() by (window, raw value) for a Scan checked with times: each record's\n"
             "window is its time (else the arrival; also the arrival when the time is more than\n"
             "max_skew_ns ahead of it) // window_ns. Groups are (window, raw value, records,\n"
             "sketch); then the other bodies as tally() gives them, and how many records were\n"
             "put at arrival for a time too far ahead, and for no time at all; then the\n"
             "patterns as tally() gives them.");

static PyObject *tally_windows(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 4 || !PyObject_TypeCheck(args[0], &ScanType)) {
        PyErr_SetString(PyExc_TypeError,
                        "tally_windows() takes (scan, arrival_ns, window_ns, max_skew_ns)");
        return NULL;
    }
    Scan *scan = (Scan *)args[0];
    uint64_t arrival = PyLong_AsUnsignedLongLong(args[1]);
    uint64_t window = arrival == (uint64_t)-1 && PyErr_Occurred()
                          ? 0
                          : PyLong_AsUnsignedLongLong(args[2]);
    uint64_t skew = PyErr_Occurred() ? 0 : PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred()) return NULL;
    if (window == 0 || scan->times == NULL) {
        PyErr_SetString(PyExc_ValueError,
                        "tally_windows() needs window_ns > 0 and a Scan checked with times");
        return NULL;
    }
    const uint8_t *wire = (const uint8_t *)PyBytes_AS_STRING(scan->wire);
    Grouped grouped = {0};
    PatternEntries entries = {0};
    size_t future = 0, missing = 0;
    uint64_t *windows = malloc((scan->count ? scan->count : 1) * sizeof(uint64_t));
    if (windows == NULL) return PyErr_NoMemory();
    int status;
    Py_BEGIN_ALLOW_THREADS
    window_of_records(scan->times, scan->count, arrival, window, skew, windows, &future,
                      &missing);
    status = group_records_in_windows(wire, scan->records, windows, scan->count, &grouped);
    if (status == 0) status = scan_theta_hashes(scan, wire, &grouped);
    if (status == 0) status = structured_bodies(wire, scan->records, scan->count, &grouped);
    if (status == 0) status = scan_patterns(scan, wire, SIZE_MAX, &grouped, &entries);
    Py_END_ALLOW_THREADS
    free(windows);
    PyObject *result = NULL;
    if (status < 0) {
        PyErr_NoMemory();
    } else {
        PyObject *tallied = build_result(scan, &grouped, &entries, 1);
        if (tallied != NULL) {
            result = Py_BuildValue("(OOnnOO)", PyTuple_GET_ITEM(tallied, 0),
                                   PyTuple_GET_ITEM(tallied, 1), (Py_ssize_t)future,
                                   (Py_ssize_t)missing, PyTuple_GET_ITEM(tallied, 2),
                                   PyTuple_GET_ITEM(tallied, 3));
            Py_DECREF(tallied);
        }
    }
    grouped_free(&grouped);
    free(entries.entries);
    return result;
}

static PyMethodDef methods[] = {
    {"check", (PyCFunction)(void (*)(void))check, METH_FASTCALL, check_doc},
    {"tally", (PyCFunction)tally, METH_O, tally_doc},
    {"select_key", (PyCFunction)(void (*)(void))select_key, METH_FASTCALL, select_key_doc},
    {"tally_keys", (PyCFunction)tally_keys, METH_O, tally_keys_doc},
    {"tally_windows", (PyCFunction)(void (*)(void))tally_windows, METH_FASTCALL,
     tally_windows_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "otlp_stats.counting._wire",
    .m_doc = "Counting's per-record work over OTLP protobuf bytes, in C.",
    .m_size = -1,
    .m_methods = methods,
};

static int seed_tables(void) {
    PyObject *os = PyImport_ImportModule("os");
    PyObject *random = os ? PyObject_CallMethod(os, "urandom", "i", (int)sizeof(table_seed)) : NULL;
    Py_XDECREF(os);
    if (random == NULL) return -1;
    memcpy(&table_seed, PyBytes_AS_STRING(random), sizeof(table_seed));
    Py_DECREF(random);
    return 0;
}

PyMODINIT_FUNC PyInit__wire(void) {
    masker_init();
    static int scratch_key_made; /* once per process, however many times the module loads */
    if (!scratch_key_made) {
        if (pthread_key_create(&scratch_key, scratch_destroy) != 0) {
            PyErr_SetString(PyExc_OSError, "no thread-specific key for the masking scratch");
            return NULL;
        }
        scratch_key_made = 1;
    }
    NO_CUTS = Py_BuildValue("(ii)", 0, 0);
    if (NO_CUTS == NULL || seed_tables() < 0 || PyType_Ready(&ScanType) < 0 ||
        PyType_Ready(&ThetaSetType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    if (PyModule_AddObjectRef(module, "Scan", (PyObject *)&ScanType) < 0 ||
        PyModule_AddObjectRef(module, "ThetaSet", (PyObject *)&ThetaSetType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    /* patterns/tally.py is plain Python with no import of counting: no cycle. */
    PyObject *tally = PyImport_ImportModule("otlp_stats.patterns.tally");
    PyObject *count_type = tally ? PyObject_GetAttrString(tally, "PatternCount") : NULL;
    Py_XDECREF(tally);
    if (count_type != NULL &&
        (!PyType_Check(count_type) ||
         !PyType_IsSubtype((PyTypeObject *)count_type, &PyTuple_Type))) {
        PyErr_SetString(PyExc_TypeError, "PatternCount must be a tuple type");
        Py_CLEAR(count_type);
    }
    if (count_type == NULL) {
        Py_DECREF(module);
        return NULL;
    }
    PatternCountType = (PyTypeObject *)count_type; /* kept for the process's life */
    MalformedWire = PyErr_NewException("otlp_stats.counting._wire.MalformedWire", PyExc_ValueError, NULL);
    if (MalformedWire == NULL || PyModule_AddObjectRef(module, "MalformedWire", MalformedWire) < 0) {
        Py_CLEAR(MalformedWire);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
