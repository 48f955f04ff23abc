/*
 * OTLP/JSON ExportLogsServiceRequest -> OTLP protobuf wire bytes, without building messages.
 *
 * One pass over the JSON, writing the protobuf encoding as it goes, so that JSON requests are
 * counted by the same scanner, from the same bytes, as protobuf ones. Every field of the
 * request is carried over (the record's time fields included), in the JSON's order, with
 * proto3's rules: a scalar equal to its default is not written, a oneof member always is.
 * For a request written in field order (as every encoder writes it) the bytes are those of
 * json_format.Parse followed by SerializeToString.
 *
 * It decides nothing on its own: whatever it is not certain that json.loads and json_format
 * read exactly as it does (a refusal, NaN, a lone surrogate, a null, a duplicate key, a number
 * written as a float for an integer field, invalid UTF-8, nesting deeper than MAX_DEPTH, ...)
 * makes it give up, and the caller decodes the request on the reference path, which gives the
 * verdict and its reason. So a request it transcodes is one json_format accepts, with the same
 * content, and every other request gets today's answer.
 *
 * Protobuf lengths come before the content: a nested message sets aside the bytes its length
 * usually takes (one for most, two for a log record, three for a request's groups) and, in the
 * rare case the guess was wrong, its content moves once it is done.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Nesting of AnyValues (arrays and kvlists) and of skipped JSON: deeper goes to the reference
 * path, so the C stack stays small whatever the input. */
#define MAX_DEPTH 64

typedef struct {
    uint8_t *data;
    size_t len, cap;
} Buffer;

typedef struct {
    const uint8_t *p, *end;
    Buffer out;     /* the protobuf being written */
    Buffer scratch; /* an escaped string's text, decoded */
    jmp_buf stop;
} Reader;

enum { GIVE_UP = 1, NO_MEMORY = 2 };

/* 16 bytes, so that it is returned in two registers rather than through memory (read back
 * right after it is written, which stalls). Requests of 4 GiB and more are not transcoded. */
typedef struct {
    const uint8_t *data;
    uint32_t len;
    uint32_t escaped;
} Str;

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

static void give_up(Reader *r) { longjmp(r->stop, GIVE_UP); }

#define LIKELY(x) __builtin_expect(!!(x), 1)

/* Writing protobuf */

/* The output is allocated once to the size of the JSON, which nearly always holds it: growing
 * stays out of line, and the check for room inline. */
static void grow(Reader *r, Buffer *b, size_t more) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < more) {
        if (cap > SIZE_MAX / 2) {
            longjmp(r->stop, NO_MEMORY);
        }
        cap *= 2;
    }
    uint8_t *data = realloc(b->data, cap);
    if (data == NULL) {
        longjmp(r->stop, NO_MEMORY);
    }
    b->data = data;
    b->cap = cap;
}

static inline void reserve(Reader *r, Buffer *b, size_t more) {
    if (LIKELY(b->cap - b->len >= more)) return;
    grow(r, b, more);
}

static inline size_t varint_size(uint64_t value) {
    size_t size = 1;
    while (value >= 0x80) {
        value >>= 7;
        size++;
    }
    return size;
}

static inline void put_varint(Reader *r, uint64_t value) {
    reserve(r, &r->out, 10);
    uint8_t *at = r->out.data + r->out.len;
    while (value >= 0x80) {
        *at++ = (uint8_t)(value | 0x80);
        value >>= 7;
    }
    *at++ = (uint8_t)value;
    r->out.len = (size_t)(at - r->out.data);
}

static inline void put_tag(Reader *r, uint32_t field, int wire_type) {
    put_varint(r, ((uint64_t)field << 3) | (uint64_t)wire_type);
}

static inline void put_fixed(Reader *r, uint64_t value, int bytes) {
    reserve(r, &r->out, 8);
    for (int i = 0; i < bytes; i++) {
        r->out.data[r->out.len++] = (uint8_t)(value >> (8 * i));
    }
}

static inline void put_bytes(Reader *r, uint32_t field, const uint8_t *data, size_t len) {
    put_tag(r, field, WIRE_LEN);
    put_varint(r, len);
    reserve(r, &r->out, len);
    memcpy(r->out.data + r->out.len, data, len);
    r->out.len += len;
}

/* Where a nested message's length goes, and how many bytes were set aside for it. */
typedef struct {
    size_t at, reserved;
} Mark;

/* A nested message: its tag, then `guess` bytes set aside for its length, the size a message
 * of its kind usually needs (a log record takes 2, a request's groups 3). */
static inline Mark begin_message(Reader *r, uint32_t field, size_t guess) {
    put_tag(r, field, WIRE_LEN);
    reserve(r, &r->out, guess);
    Mark mark = {r->out.len, guess};
    r->out.len += guess;
    return mark;
}

/* The length, once known; a wrong guess moves the content to fit it. */
static inline void end_message(Reader *r, Mark mark) {
    size_t len = r->out.len - mark.at - mark.reserved;
    size_t size = varint_size(len);
    if (size != mark.reserved) {
        if (size > mark.reserved) reserve(r, &r->out, size - mark.reserved);
        memmove(r->out.data + mark.at + size, r->out.data + mark.at + mark.reserved, len);
        r->out.len = mark.at + size + len;
    }
    uint8_t *at = r->out.data + mark.at;
    while (len >= 0x80) {
        *at++ = (uint8_t)(len | 0x80);
        len >>= 7;
    }
    *at = (uint8_t)len;
}

/* Reading JSON */

static inline int peek(Reader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t')) {
        r->p++;
    }
    return r->p < r->end ? *r->p : -1;
}

static inline void expect(Reader *r, int c) {
    if (peek(r) != c) {
        give_up(r);
    }
    r->p++;
}

static int hex_digit(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static uint32_t read_hex4(Reader *r, const uint8_t *at) {
    if (r->end - at < 4) give_up(r);
    uint32_t value = 0;
    for (int i = 0; i < 4; i++) {
        int digit = hex_digit(at[i]);
        if (digit < 0) give_up(r);
        value = (value << 4) | (uint32_t)digit;
    }
    return value;
}

/* One escape at `at` (the backslash); returns what follows it and its code point. A lone
 * surrogate gives up: json.loads keeps it, and json_format then refuses the string. */
static const uint8_t *read_escape(Reader *r, const uint8_t *at, uint32_t *code) {
    if (r->end - at < 2) give_up(r);
    switch (at[1]) {
    case '"': *code = '"'; return at + 2;
    case '\\': *code = '\\'; return at + 2;
    case '/': *code = '/'; return at + 2;
    case 'b': *code = '\b'; return at + 2;
    case 'f': *code = '\f'; return at + 2;
    case 'n': *code = '\n'; return at + 2;
    case 'r': *code = '\r'; return at + 2;
    case 't': *code = '\t'; return at + 2;
    case 'u': break;
    default: give_up(r);
    }
    uint32_t high = read_hex4(r, at + 2);
    if (high >= 0xDC00 && high <= 0xDFFF) give_up(r);
    if (high < 0xD800 || high > 0xDBFF) {
        *code = high;
        return at + 6;
    }
    if (r->end - at < 12 || at[6] != '\\' || at[7] != 'u') give_up(r);
    uint32_t low = read_hex4(r, at + 8);
    if (low < 0xDC00 || low > 0xDFFF) give_up(r);
    *code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
    return at + 12;
}

/* One UTF-8 sequence at `at` (its first byte is >= 0x80), as strictly as Python decodes. */
static const uint8_t *check_utf8(Reader *r, const uint8_t *at) {
    ptrdiff_t left = r->end - at;
    uint8_t c = at[0];
    int more;
    uint8_t low = 0x80, high = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        more = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        more = 2;
        if (c == 0xE0) low = 0xA0;
        if (c == 0xED) high = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        more = 3;
        if (c == 0xF0) low = 0x90;
        if (c == 0xF4) high = 0x8F;
    } else {
        give_up(r);
    }
    if (left <= more) give_up(r);
    if (at[1] < low || at[1] > high) give_up(r);
    for (int i = 2; i <= more; i++) {
        if (at[i] < 0x80 || at[i] > 0xBF) give_up(r);
    }
    return at + 1 + more;
}

/* Whether any of 8 bytes is a quote, a backslash, a control character or not ASCII: the bytes
 * a string's plain run stops at (the classic "has zero byte" bit trick, four times). */
#ifndef __SSE2__
static inline int special_in(uint64_t eight) {
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t quote = eight ^ (ones * '"'), backslash = eight ^ (ones * '\\');
    uint64_t found = ((quote - ones) & ~quote) | ((backslash - ones) & ~backslash) |
                     ((eight - ones * 0x20) & ~eight) | eight;
    return (found & highs) != 0;
}
#endif

/* The first byte from `at` on that ends a string's plain run (see special_in), or `end`. */
static inline const uint8_t *plain_run(const uint8_t *at, const uint8_t *end) {
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20);
    while (end - at >= 16) {
        __m128i bytes = _mm_loadu_si128((const __m128i *)(const void *)at);
        /* Compared as signed bytes, those of 0x80 and up are below the space too. */
        __m128i special = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(bytes, quote), _mm_cmpeq_epi8(bytes, backslash)),
            _mm_cmplt_epi8(bytes, space));
        unsigned found = (unsigned)_mm_movemask_epi8(special);
        if (found) return at + __builtin_ctz(found);
        at += 16;
    }
#else
    uint64_t eight;
    while (end - at >= 8 && (memcpy(&eight, at, 8), !special_in(eight))) {
        at += 8;
    }
#endif
    while (at < end && *at >= 0x20 && *at < 0x80 && *at != '"' && *at != '\\') {
        at++;
    }
    return at;
}

static Str read_string(Reader *r) {
    if (peek(r) != '"') give_up(r);
    const uint8_t *start = ++r->p;
    const uint8_t *at = start;
    int escaped = 0;
    for (;;) {
        at = plain_run(at, r->end);
        if (at >= r->end) give_up(r);
        uint8_t c = *at;
        if (c == '"') break;
        if (c < 0x20) give_up(r); /* json.loads (strict) refuses control characters */
        if (c == '\\') {
            uint32_t code;
            escaped = 1;
            at = read_escape(r, at, &code);
        } else {
            at = check_utf8(r, at);
        }
    }
    r->p = at + 1;
    Str s = {start, (uint32_t)(at - start), (uint32_t)escaped};
    return s;
}

static void append_utf8(Reader *r, Buffer *b, uint32_t code) {
    reserve(r, b, 4);
    uint8_t *at = b->data + b->len;
    if (code < 0x80) {
        *at++ = (uint8_t)code;
    } else if (code < 0x800) {
        *at++ = (uint8_t)(0xC0 | (code >> 6));
        *at++ = (uint8_t)(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
        *at++ = (uint8_t)(0xE0 | (code >> 12));
        *at++ = (uint8_t)(0x80 | ((code >> 6) & 0x3F));
        *at++ = (uint8_t)(0x80 | (code & 0x3F));
    } else {
        *at++ = (uint8_t)(0xF0 | (code >> 18));
        *at++ = (uint8_t)(0x80 | ((code >> 12) & 0x3F));
        *at++ = (uint8_t)(0x80 | ((code >> 6) & 0x3F));
        *at++ = (uint8_t)(0x80 | (code & 0x3F));
    }
    b->len = (size_t)(at - b->data);
}

/* The string's text: as it is in the JSON, or its escapes decoded into scratch. */
static Str text_of(Reader *r, Str s) {
    if (!s.escaped) return s;
    r->scratch.len = 0;
    const uint8_t *at = s.data, *end = s.data + s.len;
    while (at < end) {
        if (*at == '\\') {
            uint32_t code;
            at = read_escape(r, at, &code);
            append_utf8(r, &r->scratch, code);
        } else {
            reserve(r, &r->scratch, 1);
            r->scratch.data[r->scratch.len++] = *at++;
        }
    }
    Str text = {r->scratch.data, (uint32_t)r->scratch.len, 0};
    return text;
}

static void string_field(Reader *r, uint32_t field, int always) {
    Str text = text_of(r, read_string(r));
    if (text.len || always) put_bytes(r, field, text.data, text.len);
}

/* A key; an escaped one (which no encoder writes) goes to the reference path. */
static Str read_key(Reader *r) {
    Str key = read_string(r);
    if (key.escaped) give_up(r);
    expect(r, ':');
    return key;
}

/* read_key, quicker for the key an encoder would write next, `name`: when the member starts
 * with it in quotes and a colon, it is taken at once (a quote ends a key, so it is all of it).
 * Anything else is read as any key is. */
static inline Str read_key_expecting(Reader *r, const char *quoted, size_t len) {
    if ((size_t)(r->end - r->p) >= len && memcmp(r->p, quoted, len) == 0) {
        Str key = {r->p + 1, (uint32_t)(len - 3), 0};
        r->p += len;
        return key;
    }
    return read_key(r);
}
#define EXPECTING(name) read_key_expecting(r, "\"" name "\":", sizeof(name) + 2)

#define KEY(name) (key.len == sizeof(name) - 1 && memcmp(key.data, name, sizeof(name) - 1) == 0)
#define KEYS(json, proto) (KEY(json) || KEY(proto))
/* Each field once: a duplicate key, or both spellings of a field, go to the reference path. */
#define ONCE(bit)                                 \
    do {                                          \
        if (seen & (1u << (bit))) give_up(r);     \
        seen |= 1u << (bit);                      \
    } while (0)

static int begin_object(Reader *r) {
    expect(r, '{');
    if (peek(r) == '}') {
        r->p++;
        return 0;
    }
    return 1;
}

static int next_member(Reader *r) {
    int c = peek(r);
    r->p++;
    if (c == ',') return 1;
    if (c == '}') return 0;
    give_up(r);
    return 0;
}

static int begin_array(Reader *r) {
    expect(r, '[');
    if (peek(r) == ']') {
        r->p++;
        return 0;
    }
    return 1;
}

static int next_element(Reader *r) {
    int c = peek(r);
    r->p++;
    if (c == ',') return 1;
    if (c == ']') return 0;
    give_up(r);
    return 0;
}

static void expect_word(Reader *r, const char *word) {
    size_t len = strlen(word);
    if ((size_t)(r->end - r->p) < len || memcmp(r->p, word, len) != 0) give_up(r);
    r->p += len;
}

/* A JSON number token, checked against the JSON grammar; *integer says it has no fraction or
 * exponent. NaN and Infinity (json.loads takes them) go to the reference path. */
static Str read_number(Reader *r, int *integer) {
    peek(r);
    const uint8_t *start = r->p, *at = r->p, *end = r->end;
    if (at < end && *at == '-') at++;
    if (at >= end) give_up(r);
    if (*at == '0') {
        at++;
    } else if (*at >= '1' && *at <= '9') {
        while (at < end && *at >= '0' && *at <= '9') at++;
    } else {
        give_up(r);
    }
    *integer = 1;
    if (at < end && *at == '.') {
        *integer = 0;
        at++;
        if (at >= end || *at < '0' || *at > '9') give_up(r);
        while (at < end && *at >= '0' && *at <= '9') at++;
    }
    if (at < end && (*at == 'e' || *at == 'E')) {
        *integer = 0;
        at++;
        if (at < end && (*at == '+' || *at == '-')) at++;
        if (at >= end || *at < '0' || *at > '9') give_up(r);
        while (at < end && *at >= '0' && *at <= '9') at++;
    }
    r->p = at;
    Str s = {start, (uint32_t)(at - start), 0};
    return s;
}

static void skip_value(Reader *r, int depth) {
    if (depth > MAX_DEPTH) give_up(r);
    int c = peek(r);
    int integer;
    switch (c) {
    case '{':
        if (begin_object(r)) {
            do {
                read_string(r);
                expect(r, ':');
                skip_value(r, depth + 1);
            } while (next_member(r));
        }
        return;
    case '[':
        if (begin_array(r)) {
            do {
                skip_value(r, depth + 1);
            } while (next_element(r));
        }
        return;
    case '"': read_string(r); return;
    case 't': expect_word(r, "true"); return;
    case 'f': expect_word(r, "false"); return;
    case 'n': expect_word(r, "null"); return;
    default: read_number(r, &integer); return;
    }
}

/* Integers: a JSON integer, or a string of decimal digits with an optional minus (the OTLP
 * spelling of 64-bit ones). int() reads more ("+1", "1_0", " 1", 1.0), json_format too: those
 * go to the reference path. */
typedef enum { UINT64, INT64, UINT32, INT32 } IntKind;

static uint64_t read_integer(Reader *r, IntKind kind) {
    Str digits;
    if (peek(r) == '"') {
        digits = read_string(r);
        if (digits.escaped) give_up(r);
    } else {
        int integer;
        digits = read_number(r, &integer);
        if (!integer) give_up(r);
    }
    const uint8_t *at = digits.data, *end = digits.data + digits.len;
    int negative = at < end && *at == '-';
    at += negative;
    if (at >= end || end - at > 20) give_up(r);
    /* 19 digits cannot overflow 64 bits: only a 20th is checked. */
    const uint8_t *unchecked = end - at > 19 ? at + 19 : end;
    uint64_t magnitude = 0;
    unsigned not_digit = 0;
    for (; at < unchecked; at++) {
        unsigned digit = (unsigned)*at - '0';
        not_digit |= digit > 9;
        magnitude = magnitude * 10 + digit;
    }
    if (not_digit) give_up(r);
    if (at < end) {
        uint64_t digit = (uint64_t)*at - '0';
        if (digit > 9 || magnitude > (UINT64_MAX - digit) / 10) give_up(r);
        magnitude = magnitude * 10 + digit;
    }
    uint64_t most_positive, most_negative;
    switch (kind) {
    case UINT64: most_positive = UINT64_MAX; most_negative = 0; break;
    case INT64: most_positive = INT64_MAX; most_negative = (uint64_t)INT64_MAX + 1; break;
    case UINT32: most_positive = UINT32_MAX; most_negative = 0; break;
    default: most_positive = INT32_MAX; most_negative = (uint64_t)INT32_MAX + 1; break;
    }
    if (negative ? magnitude > most_negative : magnitude > most_positive) give_up(r);
    return negative ? (uint64_t)0 - magnitude : magnitude;
}

static int equals(Str s, const char *word) {
    size_t len = strlen(word);
    return !s.escaped && s.len == len && memcmp(s.data, word, len) == 0;
}

static double read_double(Reader *r) {
    if (peek(r) == '"') {
        Str s = read_string(r);
        if (equals(s, "NaN")) {
            uint64_t quiet_nan = 0x7FF8000000000000ull; /* float("nan") */
            double value;
            memcpy(&value, &quiet_nan, sizeof value);
            return value;
        }
        if (equals(s, "Infinity")) return HUGE_VAL;
        if (equals(s, "-Infinity")) return -HUGE_VAL;
        give_up(r);
    }
    int integer;
    Str token = read_number(r, &integer);
    char text[64];
    if (token.len >= sizeof text) give_up(r);
    memcpy(text, token.data, token.len);
    text[token.len] = '\0';
    double value = strtod(text, NULL);
    if (isinf(value)) give_up(r); /* json_format refuses a number too large for a double */
    return value;
}

static int read_bool(Reader *r) {
    int c = peek(r);
    if (c == 't') {
        expect_word(r, "true");
        return 1;
    }
    if (c == 'f') {
        expect_word(r, "false");
        return 0;
    }
    give_up(r);
    return 0;
}

/* A hex digit's value with the HEX bit set; 0 for any other byte. */
#define HEX 0x10
static const uint8_t HEX_VALUE[256] = {
    ['0'] = HEX | 0, ['1'] = HEX | 1, ['2'] = HEX | 2, ['3'] = HEX | 3, ['4'] = HEX | 4,
    ['5'] = HEX | 5, ['6'] = HEX | 6, ['7'] = HEX | 7, ['8'] = HEX | 8, ['9'] = HEX | 9,
    ['a'] = HEX | 10, ['b'] = HEX | 11, ['c'] = HEX | 12, ['d'] = HEX | 13, ['e'] = HEX | 14,
    ['f'] = HEX | 15, ['A'] = HEX | 10, ['B'] = HEX | 11, ['C'] = HEX | 12, ['D'] = HEX | 13,
    ['E'] = HEX | 14, ['F'] = HEX | 15,
};

/* traceId and spanId are hex in OTLP/JSON. Every pair is decoded, and a digit that is not hex
 * is noticed once at the end: no branch per digit. */
static void hex_field(Reader *r, uint32_t field) {
    Str s = read_string(r);
    if (s.escaped || s.len % 2) give_up(r);
    if (!s.len) return;
    put_tag(r, field, WIRE_LEN);
    put_varint(r, s.len / 2);
    reserve(r, &r->out, s.len / 2);
    uint8_t *at = r->out.data + r->out.len, all_hex = HEX;
    for (size_t i = 0; i < s.len; i += 2) {
        uint8_t high = HEX_VALUE[s.data[i]], low = HEX_VALUE[s.data[i + 1]];
        all_hex &= high & low;
        *at++ = (uint8_t)((high & 0xF) << 4 | (low & 0xF));
    }
    if (!all_hex) give_up(r);
    r->out.len += s.len / 2;
}

static int base64_digit(uint8_t c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Standard base64 with its padding, as encoders write it; json_format reads more leniently
 * (URL-safe letters, missing padding, stray characters), and those go to the reference path. */
static void base64_field(Reader *r, uint32_t field) {
    Str s = read_string(r);
    if (s.escaped || s.len % 4) give_up(r);
    size_t padding = 0;
    if (s.len && s.data[s.len - 1] == '=') padding++;
    if (s.len > 1 && s.data[s.len - 2] == '=') padding++;
    size_t size = s.len / 4 * 3 - padding;
    put_tag(r, field, WIRE_LEN);
    put_varint(r, size);
    reserve(r, &r->out, size + 2);
    uint8_t *at = r->out.data + r->out.len;
    for (size_t i = 0; i < s.len; i += 4) {
        int last = i + 4 == s.len;
        int d[4];
        for (int j = 0; j < 4; j++) {
            d[j] = (last && j >= 4 - (int)padding) ? 0 : base64_digit(s.data[i + j]);
            if (d[j] < 0) give_up(r);
        }
        uint32_t group = (uint32_t)(d[0] << 18 | d[1] << 12 | d[2] << 6 | d[3]);
        *at++ = (uint8_t)(group >> 16);
        *at++ = (uint8_t)(group >> 8);
        *at++ = (uint8_t)group;
        /* Bits the padding drops must be zero, or the text is not what an encoder writes. */
        if (last && padding == 1 && (group & 0xFF)) give_up(r);
        if (last && padding == 2 && (group & 0xFFFF)) give_up(r);
    }
    r->out.len += size;
}

/* The messages of ExportLogsServiceRequest, each writing its fields as it reads them. */

static void any_value(Reader *r, int depth);

static void repeated(Reader *r, uint32_t field, void (*element)(Reader *, int), int depth,
                     size_t guess) {
    if (!begin_array(r)) return;
    do {
        Mark mark = begin_message(r, field, guess);
        element(r, depth);
        end_message(r, mark);
    } while (next_element(r));
}

static void message(Reader *r, uint32_t field, void (*read)(Reader *, int), int depth) {
    Mark mark = begin_message(r, field, 1);
    read(r, depth);
    end_message(r, mark);
}

static void key_value(Reader *r, int depth) {
    unsigned seen = 0;
    if (!begin_object(r)) return;
    do {
        Str key = seen ? EXPECTING("value") : EXPECTING("key");
        if (KEY("key")) {
            /* value before key would be written in another order than json_format writes */
            if (seen & 2u) give_up(r);
            ONCE(0);
            string_field(r, 1, 0);
        } else if (KEY("value")) {
            ONCE(1);
            message(r, 2, any_value, depth + 1);
        } else if (KEYS("keyStrindex", "key_strindex")) {
            give_up(r);
        } else {
            skip_value(r, depth + 1);
        }
    } while (next_member(r));
}

static void array_value(Reader *r, int depth) {
    unsigned seen = 0;
    if (!begin_object(r)) return;
    do {
        Str key = read_key(r);
        if (KEY("values")) {
            ONCE(0);
            repeated(r, 1, any_value, depth, 1);
        } else {
            skip_value(r, depth + 1);
        }
    } while (next_member(r));
}

static void kvlist_value(Reader *r, int depth) {
    unsigned seen = 0;
    if (!begin_object(r)) return;
    do {
        Str key = read_key(r);
        if (KEY("values")) {
            ONCE(0);
            repeated(r, 1, key_value, depth, 1);
        } else {
            skip_value(r, depth + 1);
        }
    } while (next_member(r));
}

static void any_value(Reader *r, int depth) {
    if (depth > MAX_DEPTH) give_up(r);
    unsigned seen = 0; /* one bit for the whole oneof: two members, or one twice, give up */
    if (!begin_object(r)) return;
    do {
        Str key = EXPECTING("stringValue");
        if (KEYS("stringValue", "string_value")) {
            ONCE(0);
            string_field(r, 1, 1);
        } else if (KEYS("intValue", "int_value")) {
            ONCE(0);
            uint64_t value = read_integer(r, INT64);
            put_tag(r, 3, WIRE_VARINT);
            put_varint(r, value);
        } else if (KEYS("boolValue", "bool_value")) {
            ONCE(0);
            int value = read_bool(r);
            put_tag(r, 2, WIRE_VARINT);
            put_varint(r, (uint64_t)value);
        } else if (KEYS("doubleValue", "double_value")) {
            ONCE(0);
            double value = read_double(r);
            uint64_t bits;
            memcpy(&bits, &value, sizeof bits);
            put_tag(r, 4, WIRE_I64);
            put_fixed(r, bits, 8);
        } else if (KEYS("kvlistValue", "kvlist_value")) {
            ONCE(0);
            message(r, 6, kvlist_value, depth + 1);
        } else if (KEYS("arrayValue", "array_value")) {
            ONCE(0);
            message(r, 5, array_value, depth + 1);
        } else if (KEYS("bytesValue", "bytes_value")) {
            ONCE(0);
            base64_field(r, 7);
        } else if (KEYS("stringValueStrindex", "string_value_strindex")) {
            give_up(r);
        } else {
            skip_value(r, depth + 1);
        }
    } while (next_member(r));
}

static void uint32_field(Reader *r, uint32_t field) {
    uint64_t value = read_integer(r, UINT32);
    if (value) {
        put_tag(r, field, WIRE_VARINT);
        put_varint(r, value);
    }
}

static void resource(Reader *r, int depth) {
    unsigned seen = 0;
    if (!begin_object(r)) return;
    do {
        Str key = read_key(r);
        if (KEY("attributes")) {
            ONCE(0);
            repeated(r, 1, key_value, depth + 1, 1);
        } else if (KEYS("droppedAttributesCount", "dropped_attributes_count")) {
            ONCE(1);
            uint32_field(r, 2);
        } else if (KEYS("entityRefs", "entity_refs")) {
            give_up(r);
        } else {
            skip_value(r, depth + 1);
        }
    } while (next_member(r));
}

static void scope(Reader *r, int depth) {
    unsigned seen = 0;
    if (!begin_object(r)) return;
    do {
        Str key = read_key(r);
        if (KEY("name")) {
            ONCE(0);
            string_field(r, 1, 0);
        } else if (KEY("version")) {
            ONCE(1);
            string_field(r, 2, 0);
        } else if (KEY("attributes")) {
            ONCE(2);
            repeated(r, 3, key_value, depth + 1, 1);
        } else if (KEYS("droppedAttributesCount", "dropped_attributes_count")) {
            ONCE(3);
            uint32_field(r, 4);
        } else {
            skip_value(r, depth + 1);
        }
    } while (next_member(r));
}

/* The names of SeverityNumber's values, after the prefix they share, with their lengths. */
#define SEVERITY_PREFIX "SEVERITY_NUMBER_"
#define NAME(text) {text, sizeof(text) - 1}
static const struct {
    const char *text;
    uint32_t len;
} SEVERITY_NAMES[] = {
    NAME("UNSPECIFIED"), NAME("TRACE"), NAME("TRACE2"), NAME("TRACE3"), NAME("TRACE4"),
    NAME("DEBUG"), NAME("DEBUG2"), NAME("DEBUG3"), NAME("DEBUG4"), NAME("INFO"), NAME("INFO2"),
    NAME("INFO3"), NAME("INFO4"), NAME("WARN"), NAME("WARN2"), NAME("WARN3"), NAME("WARN4"),
    NAME("ERROR"), NAME("ERROR2"), NAME("ERROR3"), NAME("ERROR4"), NAME("FATAL"),
    NAME("FATAL2"), NAME("FATAL3"), NAME("FATAL4"),
};

/* An enum is its name or its number (any int32: proto3 enums are open). */
static uint64_t read_severity(Reader *r) {
    if (peek(r) != '"') return read_integer(r, INT32);
    const uint8_t *start = r->p;
    Str name = read_string(r);
    const size_t prefix = sizeof SEVERITY_PREFIX - 1;
    if (!name.escaped && name.len > prefix && memcmp(name.data, SEVERITY_PREFIX, prefix) == 0) {
        const uint8_t *suffix = name.data + prefix;
        uint32_t len = name.len - (uint32_t)prefix;
        for (size_t i = 0; i < sizeof SEVERITY_NAMES / sizeof *SEVERITY_NAMES; i++) {
            if (len == SEVERITY_NAMES[i].len && memcmp(suffix, SEVERITY_NAMES[i].text, len) == 0) {
                return i;
            }
        }
    }
    r->p = start; /* a number in a string: int() of it, as json_format reads it */
    return read_integer(r, INT32);
}

/* A log record's fields by their bit in log_record's `seen`: the one an encoder writes after
 * each (json_format and the OpenTelemetry encoders write them in field number order, and
 * leave out droppedAttributesCount, nearly always 0), and its key. */
static const int NEXT_RECORD_FIELD[] = {2, 10, 3, 4, 5, 7, 7, 8, 9, 1, -1};

static Str record_key(Reader *r, int expected) {
    switch (expected) {
    case 0: return EXPECTING("timeUnixNano");
    case 1: return EXPECTING("observedTimeUnixNano");
    case 2: return EXPECTING("severityNumber");
    case 3: return EXPECTING("severityText");
    case 4: return EXPECTING("body");
    case 5: return EXPECTING("attributes");
    case 6: return EXPECTING("droppedAttributesCount");
    case 7: return EXPECTING("flags");
    case 8: return EXPECTING("traceId");
    case 9: return EXPECTING("spanId");
    case 10: return EXPECTING("eventName");
    default: return read_key(r);
    }
}

static void log_record(Reader *r, int depth) {
    unsigned seen = 0;
    int expected = 0;
    if (!begin_object(r)) return;
    do {
        unsigned before = seen;
        Str key = record_key(r, expected);
        if (KEYS("timeUnixNano", "time_unix_nano")) {
            ONCE(0);
            uint64_t value = read_integer(r, UINT64);
            if (value) {
                put_tag(r, 1, WIRE_I64);
                put_fixed(r, value, 8);
            }
        } else if (KEYS("observedTimeUnixNano", "observed_time_unix_nano")) {
            ONCE(1);
            uint64_t value = read_integer(r, UINT64);
            if (value) {
                put_tag(r, 11, WIRE_I64);
                put_fixed(r, value, 8);
            }
        } else if (KEYS("severityNumber", "severity_number")) {
            ONCE(2);
            uint64_t value = read_severity(r);
            if (value) {
                put_tag(r, 2, WIRE_VARINT);
                put_varint(r, value);
            }
        } else if (KEYS("severityText", "severity_text")) {
            ONCE(3);
            string_field(r, 3, 0);
        } else if (KEY("body")) {
            ONCE(4);
            message(r, 5, any_value, depth + 1);
        } else if (KEY("attributes")) {
            ONCE(5);
            repeated(r, 6, key_value, depth + 1, 1);
        } else if (KEYS("droppedAttributesCount", "dropped_attributes_count")) {
            ONCE(6);
            uint32_field(r, 7);
        } else if (KEY("flags")) {
            ONCE(7);
            uint64_t value = read_integer(r, UINT32);
            if (value) {
                put_tag(r, 8, WIRE_I32);
                put_fixed(r, value, 4);
            }
        } else if (KEYS("traceId", "trace_id")) {
            ONCE(8);
            hex_field(r, 9);
        } else if (KEYS("spanId", "span_id")) {
            ONCE(9);
            hex_field(r, 10);
        } else if (KEYS("eventName", "event_name")) {
            ONCE(10);
            string_field(r, 12, 0);
        } else {
            skip_value(r, depth + 1);
        }
        unsigned read = seen & ~before; /* the field just read, if it is one */
        expected = read ? NEXT_RECORD_FIELD[__builtin_ctz(read)] : -1;
    } while (next_member(r));
}

static void scope_logs(Reader *r, int depth) {
    unsigned seen = 0;
    if (!begin_object(r)) return;
    do {
        Str key = read_key(r);
        if (KEYS("logRecords", "log_records")) {
            ONCE(0);
            repeated(r, 2, log_record, depth + 1, 2);
        } else if (KEY("scope")) {
            ONCE(1);
            message(r, 1, scope, depth + 1);
        } else if (KEYS("schemaUrl", "schema_url")) {
            ONCE(2);
            string_field(r, 3, 0);
        } else {
            skip_value(r, depth + 1);
        }
    } while (next_member(r));
}

static void resource_logs(Reader *r, int depth) {
    unsigned seen = 0;
    if (!begin_object(r)) return;
    do {
        Str key = read_key(r);
        if (KEYS("scopeLogs", "scope_logs")) {
            ONCE(0);
            repeated(r, 2, scope_logs, depth + 1, 3);
        } else if (KEY("resource")) {
            ONCE(1);
            message(r, 1, resource, depth + 1);
        } else if (KEYS("schemaUrl", "schema_url")) {
            ONCE(2);
            string_field(r, 3, 0);
        } else {
            skip_value(r, depth + 1);
        }
    } while (next_member(r));
}

static void request(Reader *r) {
    unsigned seen = 0;
    if (begin_object(r)) {
        do {
            Str key = read_key(r);
            if (KEYS("resourceLogs", "resource_logs")) {
                ONCE(0);
                repeated(r, 1, resource_logs, 1, 3);
            } else {
                skip_value(r, 1);
            }
        } while (next_member(r));
    }
    if (peek(r) != -1) give_up(r); /* json.loads refuses anything after the value */
}

/* setjmp lives here alone, so that nothing it returns to was changed since. */
static int transcode_into(Reader *r) {
    int outcome = setjmp(r->stop);
    if (outcome == 0) {
        request(r);
    }
    return outcome;
}

static PyObject *transcode(PyObject *module, PyObject *payload) {
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE) < 0) return NULL;
    if ((uint64_t)view.len >= UINT32_MAX) { /* beyond what Str measures: the reference path */
        PyBuffer_Release(&view);
        return Py_NewRef(Py_None);
    }
    Reader r;
    memset(&r, 0, sizeof r);
    r.p = view.buf;
    r.end = r.p + view.len;
    int outcome;
    Py_BEGIN_ALLOW_THREADS
    /* Protobuf is smaller than its JSON: one allocation up front is nearly always enough.
     * (Written straight into a bytes object cut to size afterwards, it would save a copy of
     * the result but cost more: the cut gives pages back, and the next request faults them
     * in again.) */
    r.out.data = malloc((size_t)view.len + 64);
    r.out.cap = r.out.data ? (size_t)view.len + 64 : 0;
    outcome = r.out.data ? transcode_into(&r) : NO_MEMORY;
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyObject *result;
    if (outcome == NO_MEMORY) {
        result = PyErr_NoMemory();
    } else if (outcome == GIVE_UP) {
        result = Py_NewRef(Py_None);
    } else {
        result = PyBytes_FromStringAndSize((const char *)r.out.data, (Py_ssize_t)r.out.len);
    }
    free(r.out.data);
    free(r.scratch.data);
    return result;
}

static PyMethodDef METHODS[] = {
    {"transcode", transcode, METH_O,
     "transcode(payload) -> bytes | None\n\n"
     "The OTLP protobuf encoding of an OTLP/JSON ExportLogsServiceRequest, or None where the\n"
     "reference path (json.loads and json_format) must decide: a request it would refuse,\n"
     "and anything else this reader does not read exactly as it does."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "_otlp_json",
    "OTLP/JSON logs requests transcoded to OTLP protobuf in one pass, in C.", -1, METHODS,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__otlp_json(void) { return PyModule_Create(&MODULE); }
