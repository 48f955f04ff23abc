/* The masker's built-in rules in C: the same token classifier as masker.py, over UTF-8 bytes.
 * Pure C, no Python: the Python binding is _masker.c; the wire scanner can include it too.
 *
 * masker.py is the reference and its docstring says what is masked; this is a port of it, rule
 * for rule, that tests/patterns/test_masker_c.py holds equal to it on random and Loghub
 * messages. Every rule is a scan over ASCII character classes: no expression, no backtracking,
 * linear in the message (a quote with no closing one is not looked for twice). Bytes at or
 * above 0x80 are word characters, as non-ASCII characters are in the reference.
 */
#ifndef OTLP_STATS_MASKER_CORE_H
#define OTLP_STATS_MASKER_CORE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define MASK "<*>"
#define MASK_LEN 3
/* What pattern_mask says it cut, bits of *cuts (masker.CUT_TOKENS, masker.CUT_LENGTH). */
#define CUT_TOKENS 1
#define CUT_LENGTH 2
/* Scratch buffers bigger than this (a hostile message's) are freed after the call. */
#define KEEP_BYTES (64 * 1024)

typedef struct {
    char *data;
    size_t len, cap;
} Buf;

typedef struct {
    size_t off, len;
} Span;

typedef struct {
    Span *items;
    size_t len, cap;
} Spans;

static int buf_grow(Buf *b, size_t n) {
    {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) return -1;
        b->data = grown;
        b->cap = cap;
    }
    return 0;
}

static inline int buf_put(Buf *b, const char *s, size_t n) {
    if (b->len + n > b->cap && buf_grow(b, n)) return -1;
    /* Most pieces are a few bytes: a loop beats a call to memcpy there. */
    char *to = b->data + b->len;
    if (s) {
        if (n < 8) {
            for (size_t k = 0; k < n; k++) to[k] = s[k];
        } else if (n <= 16) { /* two overlapping words, each one move */
            memcpy(to, s, 8);
            memcpy(to + n - 8, s + n - 8, 8);
        } else {
            memcpy(to, s, n);
        }
    }
    b->len += n;
    return 0;
}

/* buf_put of a short word whose source has `readable` bytes from s: a word under 8 bytes is
 * copied as one 8-byte move when both sides have room (the bytes past n are overwritten by the
 * next put or never read). */
static inline int buf_put_word(Buf *b, const char *s, size_t n, size_t readable) {
    if (n < 8 && readable >= 8 && b->len + 8 <= b->cap) {
        memcpy(b->data + b->len, s, 8);
        b->len += n;
        return 0;
    }
    return buf_put(b, s, n);
}

static inline int spans_push(Spans *s, size_t off, size_t len) {
    if (s->len == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        Span *grown = realloc(s->items, cap * sizeof(Span));
        if (!grown) return -1;
        s->items = grown;
        s->cap = cap;
    }
    s->items[s->len].off = off;
    s->items[s->len].len = len;
    s->len++;
    return 0;
}

/* Character classes, one table lookup each (filled once when the module loads). */
enum {
    BLANK = 1,
    DIGIT = 2,
    ALPHA = 4,
    PUNCT = 8,
    JOINER = 16,
    VALUE_END = 32,
    QUOTE_AFTER = 64,
    /* What a token needs for any rule but the date words' to change it: a digit (words
     * holding one), `@` (emails), `=` (key=value) or `*` (a mask already there, which joins). */
    CHANGES = 128,
    QUOTE = 256,
};
static unsigned short CLASSES[256];

static void mark(const char *chars, unsigned short class) {
    for (; *chars; chars++) CLASSES[(unsigned char)*chars] |= class;
}

static void fill_classes(void) {
    mark(" \t\r\n\f\v", BLANK);
    mark("0123456789", DIGIT);
    mark("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", ALPHA);
    mark("=:,;()[]{}<>\"'/|@#!?*&$%^~`\\", PUNCT);
    mark(".:-/+", JOINER);
    mark(",;&", VALUE_END);
    mark("=:([", QUOTE_AFTER);
    mark("0123456789@=*", CHANGES);
    mark("\"'", QUOTE);
}

static int is_blank(unsigned char c) { return CLASSES[c] & BLANK; }
static int is_digit(unsigned char c) { return CLASSES[c] & DIGIT; }
static int is_alpha(unsigned char c) { return CLASSES[c] & ALPHA; }
static int is_punct(unsigned char c) { return (CLASSES[c] & PUNCT) != 0; }
static int is_mask(const char *s, size_t n) { return n == MASK_LEN && memcmp(s, MASK, MASK_LEN) == 0; }
static int starts_masked(const char *s, size_t n) { return n >= MASK_LEN && memcmp(s, MASK, MASK_LEN) == 0; }

static const char *const UNITS[] = {
    "ns", "us", "\xc2\xb5s", "ms", "s", "sec", "secs", "m", "min", "mins", "h", "d",
    "b", "B", "k", "K", "kb", "KB", "kB", "mb", "MB", "gb", "GB", "tb", "TB",
    "KiB", "MiB", "GiB", "TiB", "bytes", "%", NULL,
};
static const char *const DATE_WORDS[] = {
    "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", NULL,
};

/* The first bytes of the units and date words: most words are ruled out by that alone. */
static unsigned char LIST_FIRST[256];

static int in_list(const char *s, size_t n, const char *const *list) {
    if (n == 0 || n > 5) return 0; /* the longest unit, `bytes`, has 5 */
    if (!LIST_FIRST[(unsigned char)s[0]]) return 0;
    for (; *list; list++)
        if ((*list)[0] == s[0] && strlen(*list) == n && memcmp(*list, s, n) == 0) return 1;
    return 0;
}

/* Every date word is three letters, the first a capital: most tokens are told apart by that. */
static int is_date_word(const char *s, size_t n) {
    return n == 3 && s[0] >= 'A' && s[0] <= 'Z' && in_list(s, n, DATE_WORDS);
}

/* Blank-separated tokens into toks/spans, quoted values masked; past max_tokens one mask (and
 * CUT_TOKENS in *cuts). Per token, a byte in `changes`: 0 when no rule of mask_token can change
 * it (no CHANGES class byte), so that it is copied as it is. */
static int split_tokens(const char *m, size_t n, size_t max_tokens, Buf *toks, Spans *spans,
                        Buf *changes, int *cuts) {
    int unclosed_double = 0, unclosed_single = 0;
    size_t i = 0;
    for (;;) {
        while (i < n && is_blank((unsigned char)m[i])) i++;
        if (i >= n) break;
        if (spans->len == max_tokens) {
            size_t off = toks->len;
            *cuts |= CUT_TOKENS;
            if (buf_put(toks, MASK, MASK_LEN) || spans_push(spans, off, MASK_LEN) ||
                buf_put(changes, "\1", 1))
                return -1;
            break;
        }
        size_t start = i, piece = i, off = toks->len;
        unsigned short seen = 0;
        for (; i < n; i++) {
            unsigned short class = CLASSES[(unsigned char)m[i]];
            if (class & BLANK) break;
            seen |= class;
            if (!(class & QUOTE)) continue;
            char c = m[i];
            int *unclosed = c == '"' ? &unclosed_double : &unclosed_single;
            if (!*unclosed && (i == start || (CLASSES[(unsigned char)m[i - 1]] & QUOTE_AFTER))) {
                const char *end = memchr(m + i + 1, c, n - i - 1);
                if (!end) {
                    *unclosed = 1;
                } else {
                    if (buf_put(toks, m + piece, i + 1 - piece) || buf_put(toks, MASK, MASK_LEN))
                        return -1;
                    seen |= CHANGES; /* the mask it now holds */
                    piece = i = (size_t)(end - m);
                }
            }
        }
        if (buf_put(toks, m + piece, i - piece) || spans_push(spans, off, toks->len - off) ||
            buf_put(changes, (seen & CHANGES) ? "\1" : "", 1))
            return -1;
    }
    return 0;
}

static int is_email(const char *t, size_t n) {
    const char *at = memchr(t, '@', n);
    if (!at || at == t || memchr(at + 1, '@', n - (size_t)(at - t) - 1)) return 0;
    for (size_t j = (size_t)(at - t) + 2; j + 1 < n; j++)
        if (t[j] == '.') return 1;
    return 0;
}

static int is_name_with_digit(const char *w, size_t n) {
    size_t i = 0;
    while (i < n && is_alpha((unsigned char)w[i])) i++;
    if (i < 2 || i + 1 > n || !is_digit((unsigned char)w[i])) return 0;
    size_t rest = i + 1;
    if (rest == n) return 1;
    if (w[rest] != '_' || rest + 1 == n) return 0;
    for (size_t j = rest + 1; j < n; j++)
        if (!is_alpha((unsigned char)w[j])) return 0;
    return 1;
}

/* A word: as it is, or a mask keeping a number's known unit. */
static int mask_word(const char *w, size_t n, Buf *out) {
    int digit = 0;
    for (size_t j = 0; j < n && !digit; j++) digit = is_digit((unsigned char)w[j]);
    if (!digit || is_name_with_digit(w, n)) return buf_put(out, w, n);
    size_t i = (w[0] == '+' || w[0] == '-') ? 1 : 0, first = i;
    while (i < n && (is_digit((unsigned char)w[i]) || w[i] == '.')) i++;
    if (buf_put(out, MASK, MASK_LEN)) return -1;
    if (i != first && i != n && in_list(w + i, n - i, UNITS)) return buf_put(out, w + i, n - i);
    return 0;
}

/* Masked parts that touch through joiners become one mask; `::` before a mask is the
 * address's. */
static int join_masked(const Buf *pb, const Spans *ps, Buf *out) {
    int last_mask = 0, any = 0;
    for (size_t k = 0; k < ps->len; k++) {
        const char *part = pb->data + ps->items[k].off;
        size_t len = ps->items[k].len;
        int next_masked = k + 1 < ps->len &&
                          starts_masked(pb->data + ps->items[k + 1].off, ps->items[k + 1].len);
        if (len >= 2 && part[len - 1] == ':' && part[len - 2] == ':' && next_masked) len -= 2;
        if (!len) continue;
        if (is_mask(part, len) && any && last_mask) continue;
        if (any && last_mask && next_masked) {
            int joiners = 1;
            for (size_t j = 0; j < len && joiners; j++) joiners = CLASSES[(unsigned char)part[j]] & JOINER;
            if (joiners) continue;
        }
        if (buf_put(out, part, len)) return -1;
        any = 1;
        last_mask = is_mask(part, len);
    }
    return 0;
}

static int mask_token(const char *t, size_t n, Buf *pb, Spans *ps, Buf *out) {
    if (is_mask(t, n) ) return buf_put(out, t, n);
    /* No punctuation (most tokens holding a digit, `1-0`, `12.5ms`): one word, no email, no
     * key=value and nothing to join, so the word's mask is the token's. */
    size_t j = 0;
    while (j < n && !(CLASSES[(unsigned char)t[j]] & PUNCT)) j++;
    if (j == n) return mask_word(t, n, out);
    if (is_email(t, n)) return buf_put(out, MASK, MASK_LEN);
    pb->len = 0;
    ps->len = 0;
    int in_value = 0;
    size_t start = 0;
    while (start < n) {
        int punct = is_punct((unsigned char)t[start]);
        size_t end = start + 1;
        while (end < n && is_punct((unsigned char)t[end]) == punct) end++;
        const char *run = t + start;
        size_t len = end - start;
        start = end;
        if (in_value) {
            int ends = 0;
            for (size_t j = 0; j < len && !ends; j++) ends = CLASSES[(unsigned char)run[j]] & VALUE_END;
            if (!ends) {
                Span last = ps->items[ps->len - 1];
                if (!is_mask(pb->data + last.off, last.len)) {
                    size_t off = pb->len;
                    if (buf_put(pb, MASK, MASK_LEN) || spans_push(ps, off, MASK_LEN)) return -1;
                }
                continue;
            }
        }
        in_value = 0;
        size_t off = pb->len;
        if (!punct) {
            if (mask_word(run, len, pb)) return -1;
        } else if (buf_put(pb, run, len)) {
            return -1;
        }
        if (spans_push(ps, off, pb->len - off)) return -1;
        in_value = punct && len == 1 && run[0] == '=' && ps->len > 1;
    }
    return join_masked(pb, ps, out);
}

/* What one call needs besides the message: kept across calls, so that masking allocates
 * nothing once the buffers have grown to the messages' size. Zero-initialise it. */
typedef struct {
    Buf toks, pieces, masked, pattern, as_mask, changes;
    Spans spans, piece_spans, masked_spans;
} MaskScratch;

/* A pattern cut to max_length bytes at a token's end, with a trailing mask (and CUT_LENGTH in
 * *cuts). */
static int cut_pattern(Buf *pattern, size_t max_length, int *cuts) {
    if (pattern->len <= max_length) return 0;
    *cuts |= CUT_LENGTH;
    size_t cut = 0;
    for (size_t j = max_length - MASK_LEN; j > 0; j--)
        if (pattern->data[j - 1] == ' ') {
            cut = j - 1;
            break;
        }
    pattern->len = cut;
    return cut > 0 ? buf_put(pattern, " " MASK, MASK_LEN + 1) : buf_put(pattern, MASK, MASK_LEN);
}

/* The pattern in s->pattern, cut to max_length bytes at a token's end with a trailing mask. */
static int build_pattern(MaskScratch *s, size_t max_length, int *cuts) {
    Buf *pattern = &s->pattern;
    const unsigned char *as_mask = (const unsigned char *)s->as_mask.data;
    pattern->len = 0;
    for (size_t k = 0; k < s->masked_spans.len; k++) {
        Span span = s->masked_spans.items[k];
        if (k && buf_put(pattern, " ", 1)) return -1;
        if (as_mask[k] ? buf_put(pattern, MASK, MASK_LEN)
                       : buf_put(pattern, s->masked.data + span.off, span.len))
            return -1;
    }
    return cut_pattern(pattern, max_length, cuts);
}

/* Where the token starting at m[i] ends (a blank or n); in *seen its bytes' classes. */
static inline size_t token_end(const char *m, size_t n, size_t i, unsigned short *seen) {
    unsigned short found = 0;
    for (; i < n; i++) {
        unsigned short class = CLASSES[(unsigned char)m[i]];
        if (class & BLANK) break;
        found |= class;
    }
    *seen = found;
    return i;
}

/* Whether the token m[start..end) opens a quote: a quote first or after one of QUOTE_AFTER. */
static int opens_quote(const char *m, size_t start, size_t end) {
    for (size_t i = start; i < end; i++)
        if ((CLASSES[(unsigned char)m[i]] & QUOTE) &&
            (i == start || (CLASSES[(unsigned char)m[i - 1]] & QUOTE_AFTER)))
            return 1;
    return 0;
}

#ifdef __SSE2__
/*
 * The direct path reads the message through bit masks, one bit a byte, 64 bytes a word, made
 * 16 bytes at a time with vector compares (a dozen operations per 16 bytes instead of a table
 * load and tests per byte). `event` marks what needs a token looked at on its own: a CHANGES
 * byte or a quote, a token opening with a capital (a date word's first letter), a blank other
 * than a space, or a blank before another. Between two events every token is copied as it is,
 * one space apart: the whole stretch extends the run of unchanged bytes in a few word
 * operations, whatever its length. Longer messages take the byte loop.
 */
#define MASKED_BYTES 4096
#define MASK_WORDS (MASKED_BYTES / 64 + 2)

typedef struct {
    uint64_t blank[MASK_WORDS], changes[MASK_WORDS], quote[MASK_WORDS], event[MASK_WORDS];
    size_t tokens; /* how many tokens the message has */
} ByteMasks;

typedef struct {
    unsigned blank, space, changes, quote, capital;
} Classes16;

static inline Classes16 classify16(const char *p) {
    __m128i x = _mm_loadu_si128((const __m128i *)p);
    __m128i control = _mm_sub_epi8(x, _mm_set1_epi8(0x09)); /* \t \n \v \f \r: 0 to 4 */
    __m128i is_control = _mm_cmpeq_epi8(_mm_min_epu8(control, _mm_set1_epi8(4)), control);
    __m128i digit = _mm_sub_epi8(x, _mm_set1_epi8('0'));
    __m128i is_digit = _mm_cmpeq_epi8(_mm_min_epu8(digit, _mm_set1_epi8(9)), digit);
    __m128i capital = _mm_sub_epi8(x, _mm_set1_epi8('A'));
    __m128i is_capital = _mm_cmpeq_epi8(_mm_min_epu8(capital, _mm_set1_epi8(25)), capital);
    __m128i other = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('@')),
                                              _mm_cmpeq_epi8(x, _mm_set1_epi8('='))),
                                 _mm_cmpeq_epi8(x, _mm_set1_epi8('*')));
    __m128i quotes = _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
                                  _mm_cmpeq_epi8(x, _mm_set1_epi8('\'')));
    __m128i space = _mm_cmpeq_epi8(x, _mm_set1_epi8(' '));
    Classes16 c;
    c.space = (unsigned)_mm_movemask_epi8(space);
    c.blank = c.space | (unsigned)_mm_movemask_epi8(is_control);
    c.changes = (unsigned)_mm_movemask_epi8(_mm_or_si128(is_digit, other));
    c.quote = (unsigned)_mm_movemask_epi8(quotes);
    c.capital = (unsigned)_mm_movemask_epi8(is_capital);
    return c;
}

/* The masks of m's n bytes (n <= MASKED_BYTES); every bit from n on is a blank's, so that a
 * token's end is always found, and an event's (a blank before a blank). The tokens are
 * counted only if `count`. */
static void classify_message(ByteMasks *bm, const char *m, size_t n, int count) {
    size_t words = n / 64 + 1;
    uint64_t space[MASK_WORDS], capital[MASK_WORDS];
    for (size_t w = 0; w < words; w++) {
        uint64_t blank = 0, spaces = 0, changes = 0, quote = 0, capitals = 0;
        for (size_t part = 0; part < 4; part++) {
            size_t off = w * 64 + part * 16;
            Classes16 c = {0xffff, 0xffff, 0, 0, 0};
            if (off + 16 <= n) {
                c = classify16(m + off);
            } else if (off < n && n >= 16) { /* the last 16 bytes, shifted to start at off */
                unsigned shift = (unsigned)(off + 16 - n), pad = 0xffffu << (16 - shift);
                c = classify16(m + n - 16);
                c.blank = ((c.blank >> shift) | pad) & 0xffffu;
                c.space = ((c.space >> shift) | pad) & 0xffffu;
                c.changes >>= shift;
                c.quote >>= shift;
                c.capital >>= shift;
            } else if (off < n) { /* a message under 16 bytes, padded with spaces */
                char padded[16];
                memset(padded, ' ', sizeof padded);
                for (size_t k = 0; k < n; k++) padded[k] = m[k];
                c = classify16(padded);
            }
            blank |= (uint64_t)c.blank << (part * 16);
            spaces |= (uint64_t)c.space << (part * 16);
            changes |= (uint64_t)c.changes << (part * 16);
            quote |= (uint64_t)c.quote << (part * 16);
            capitals |= (uint64_t)c.capital << (part * 16);
        }
        bm->blank[w] = blank;
        bm->changes[w] = changes;
        bm->quote[w] = quote;
        space[w] = spaces;
        capital[w] = capitals;
    }
    bm->blank[words] = ~(uint64_t)0;
    bm->tokens = 0;
    uint64_t before = 1; /* the message's start counts as a blank before its first byte */
    for (size_t w = 0; w < words; w++) {
        uint64_t blank = bm->blank[w];
        uint64_t starts = ~blank & ((blank << 1) | before);
        uint64_t doubled = blank & ((blank >> 1) | (bm->blank[w + 1] << 63));
        bm->event[w] = bm->changes[w] | bm->quote[w] | (starts & capital[w]) |
                       (blank & ~space[w]) | doubled;
        if (count) bm->tokens += (size_t)__builtin_popcountll(starts);
        before = blank >> 63;
    }
    bm->event[words] = ~(uint64_t)0;
}

/* The first byte at or after i that is not a blank, or n. */
static inline size_t next_nonblank(const ByteMasks *bm, size_t i, size_t n) {
    size_t w = i / 64, last = n / 64;
    uint64_t bits = ~bm->blank[w] & (~(uint64_t)0 << (i % 64));
    while (!bits) {
        if (++w > last) return n;
        bits = ~bm->blank[w];
    }
    size_t at = w * 64 + (size_t)__builtin_ctzll(bits);
    return at < n ? at : n;
}

/* The first bit at or after i set in words[] (there is one: the masks end with set bits). */
static inline size_t next_set(const uint64_t *words, size_t i) {
    size_t w = i / 64;
    uint64_t bits = words[w] & (~(uint64_t)0 << (i % 64));
    while (!bits) bits = words[++w];
    return w * 64 + (size_t)__builtin_ctzll(bits);
}

/* The last blank in [i, e), or i when there is none (i is a token's first byte). */
static inline size_t last_blank(const ByteMasks *bm, size_t i, size_t e) {
    if (e <= i + 1) return i;
    size_t w = (e - 1) / 64;
    uint64_t bits = bm->blank[w] & (~(uint64_t)0 >> (63 - (e - 1) % 64));
    for (;;) {
        if (w == i / 64) bits &= ~(uint64_t)0 << (i % 64);
        if (bits) return w * 64 + 63 - (size_t)__builtin_clzll(bits);
        if (w == i / 64) return i;
        bits = bm->blank[--w];
    }
}

/* Whether any bit of words[] in [a, b) is set (a < b). */
static inline int any_in(const uint64_t *words, size_t a, size_t b) {
    size_t first = a / 64, last = (b - 1) / 64;
    uint64_t head = words[first] & (~(uint64_t)0 << (a % 64));
    uint64_t tail_mask = ~(uint64_t)0 >> (63 - (b - 1) % 64);
    if (first == last) return (head & tail_mask) != 0;
    if (head) return 1;
    for (size_t w = first + 1; w < last; w++)
        if (words[w]) return 1;
    return (words[last] & tail_mask) != 0;
}
#endif

/* The pattern being built by mask_direct: the bytes in out, then m[run..run_end) when in_run
 * (tokens no rule changes, one space apart in the message as in the pattern). */
typedef struct {
    Buf *out;
    const char *m;
    size_t run, run_end;
    int in_run, any;
} Direct;

static inline int direct_flush(Direct *d) {
    if (!d->in_run) return 0;
    d->in_run = 0;
    size_t n = d->run_end - d->run;
#ifdef __SSE2__
    /* A run is often tens of bytes: 16 at a time inline, the last 16 overlapping, costs less
     * than a call to memcpy. */
    Buf *b = d->out;
    if (n > 16 && n <= 256) {
        if (b->len + n > b->cap && buf_grow(b, n)) return -1;
        const char *from = d->m + d->run;
        char *to = b->data + b->len;
        for (size_t k = 0; k + 16 < n; k += 16)
            _mm_storeu_si128((__m128i *)(to + k), _mm_loadu_si128((const __m128i *)(from + k)));
        _mm_storeu_si128((__m128i *)(to + n - 16),
                         _mm_loadu_si128((const __m128i *)(from + n - 16)));
        b->len += n;
        return 0;
    }
#endif
    return buf_put(d->out, d->m + d->run, n);
}

/* Unchanged tokens m[start..end), one space apart, after the pattern so far. */
static inline int direct_keep(Direct *d, size_t start, size_t end) {
    if (d->in_run && start == d->run_end + 1 && d->m[d->run_end] == ' ') {
        d->run_end = end;
        return 0;
    }
    if (direct_flush(d) || (d->any && buf_put(d->out, " ", 1))) return -1;
    d->in_run = d->any = 1;
    d->run = start;
    d->run_end = end;
    return 0;
}

/*
 * The pattern for a message with no quoted value and no date word (most messages), in one pass
 * straight into s->pattern: no token copied into toks and masked first. The same pattern as the
 * general path's, whose steps it skips only where they change nothing (tests/patterns/
 * test_masker_c.py holds both equal to the reference). 1: done; 0: the message opens a quote or
 * holds a date word, for the general path; -1: out of memory.
 */
static int mask_direct(MaskScratch *s, const char *m, size_t n, size_t max_tokens,
                       size_t max_length, int *cuts) {
    Direct d = {&s->pattern, m, 0, 0, 0, 0};
    s->pattern.len = 0;
    size_t i = 0, tokens = 0;
#ifdef __SSE2__
    ByteMasks bm;
    int masked = n <= MASKED_BYTES;
    /* Stretches are skipped without counting their tokens: only when the cap is out of reach
     * (for certain when n bytes cannot hold more tokens). */
    int sure = (n + 1) / 2 <= max_tokens;
    if (masked) classify_message(&bm, m, n, !sure);
    int skip = masked && (sure || bm.tokens <= max_tokens);
#endif
    for (;;) {
#ifdef __SSE2__
        if (masked) {
            i = next_nonblank(&bm, i, n);
            if (skip && i < n) {
                size_t last = last_blank(&bm, i, next_set(bm.event, i));
                if (last > i) { /* whole tokens before the next event */
                    if (direct_keep(&d, i, last)) return -1;
                    i = last + 1;
                }
            }
        } else
#endif
            while (i < n && (CLASSES[(unsigned char)m[i]] & BLANK)) i++;
        if (i >= n) break;
        if (tokens == max_tokens) {
            *cuts |= CUT_TOKENS;
            if (direct_flush(&d) || buf_put(d.out, " " MASK, MASK_LEN + 1)) return -1;
            break;
        }
        size_t start = i;
        unsigned short seen;
#ifdef __SSE2__
        if (masked) {
            i = next_set(bm.blank, start);
            seen = (unsigned short)((any_in(bm.changes, start, i) ? CHANGES : 0) |
                                    (any_in(bm.quote, start, i) ? QUOTE : 0));
        } else
#endif
            i = token_end(m, n, start, &seen);
        if ((seen & QUOTE) && opens_quote(m, start, i)) return 0;
        if (is_date_word(m + start, i - start)) return 0;
        if (!(seen & CHANGES)) {
            if (direct_keep(&d, start, i)) return -1;
        } else if (direct_flush(&d) || (d.any && buf_put(d.out, " ", 1)) ||
                   mask_token(m + start, i - start, &s->pieces, &s->piece_spans, d.out)) {
            return -1;
        }
        d.any = 1;
        tokens++;
    }
    if (direct_flush(&d)) return -1;
    return cut_pattern(d.out, max_length, cuts) ? -1 : 1;
}

/* A weekday or month name beside a masked token, or before another, is a date's part. */
static void mask_date_words(MaskScratch *s) {
    unsigned char *as_mask = (unsigned char *)s->as_mask.data;
    const Span *tokens = s->spans.items, *masked = s->masked_spans.items;
    size_t count = s->spans.len;
    for (size_t k = 0; k < count; k++) {
        if (!is_date_word(s->toks.data + tokens[k].off, tokens[k].len)) continue;
        int before = k > 0 && (as_mask[k - 1] ||
                               starts_masked(s->masked.data + masked[k - 1].off, masked[k - 1].len));
        int after = k + 1 < count &&
                    starts_masked(s->masked.data + masked[k + 1].off, masked[k + 1].len);
        int next_date =
            k + 1 < count && is_date_word(s->toks.data + tokens[k + 1].off, tokens[k + 1].len);
        if (before || after || next_date) as_mask[k] = 1;
    }
}

/* The message's pattern into *out (s->pattern's bytes, valid until the next call), or -1 when
 * memory runs out; in *cuts the bounds it was cut at (CUT_TOKENS, CUT_LENGTH; 0: none), for
 * the metrics of them. max_tokens >= 1, max_length >= 3; masker_init() called once before. */
static int pattern_mask(MaskScratch *s, const char *message, size_t n, size_t max_tokens,
                        size_t max_length, const char **out, size_t *out_len, int *cuts) {
    /* Set from scratch: a direct try that gives up (a quote, a date word) may have set some. */
    *cuts = 0;
    int direct = mask_direct(s, message, n, max_tokens, max_length, cuts);
    if (direct < 0) return -1;
    if (direct) {
        *out = s->pattern.data ? s->pattern.data : "";
        *out_len = s->pattern.len;
        return 0;
    }
    s->toks.len = s->pieces.len = s->masked.len = s->as_mask.len = s->changes.len = 0;
    s->spans.len = s->piece_spans.len = s->masked_spans.len = 0;
    *cuts = 0;
    if (split_tokens(message, n, max_tokens, &s->toks, &s->spans, &s->changes, cuts)) return -1;
    for (size_t k = 0; k < s->spans.len; k++) {
        size_t off = s->masked.len;
        Span token = s->spans.items[k];
        const char *text = s->toks.data + token.off;
        /* A token no rule of mask_token changes (most words of most messages) is copied as it
         * is, which is what mask_token would give, without cutting it into words. */
        if (!s->changes.data[k] ? buf_put(&s->masked, text, token.len)
                                : mask_token(text, token.len, &s->pieces, &s->piece_spans,
                                             &s->masked))
            return -1;
        if (spans_push(&s->masked_spans, off, s->masked.len - off)) return -1;
    }
    if (buf_put(&s->as_mask, NULL, s->spans.len + 1)) return -1;
    memset(s->as_mask.data, 0, s->spans.len + 1);
    mask_date_words(s);
    if (build_pattern(s, max_length, cuts)) return -1;
    *out = s->pattern.data ? s->pattern.data : "";
    *out_len = s->pattern.len;
    return 0;
}

/* Frees the buffers a hostile message grew past KEEP_BYTES. */
static inline void mask_scratch_trim(MaskScratch *s) {
    Buf *bufs[] = {&s->toks, &s->pieces, &s->masked, &s->pattern, &s->as_mask, &s->changes};
    for (size_t k = 0; k < sizeof bufs / sizeof *bufs; k++)
        if (bufs[k]->cap > KEEP_BYTES) {
            free(bufs[k]->data);
            *bufs[k] = (Buf){0};
        }
    Spans *lists[] = {&s->spans, &s->piece_spans, &s->masked_spans};
    for (size_t k = 0; k < sizeof lists / sizeof *lists; k++)
        if (lists[k]->cap * sizeof(Span) > KEEP_BYTES) {
            free(lists[k]->items);
            *lists[k] = (Spans){0};
        }
}

/* Frees every buffer (a scratch of one call's own, or one whose thread is done). */
static inline void mask_scratch_free(MaskScratch *s) {
    Buf *bufs[] = {&s->toks, &s->pieces, &s->masked, &s->pattern, &s->as_mask, &s->changes};
    for (size_t k = 0; k < sizeof bufs / sizeof *bufs; k++) free(bufs[k]->data);
    Spans *lists[] = {&s->spans, &s->piece_spans, &s->masked_spans};
    for (size_t k = 0; k < sizeof lists / sizeof *lists; k++) free(lists[k]->items);
    *s = (MaskScratch){0};
}

static void masker_init(void) {
    fill_classes();
    for (const char *const *unit = UNITS; *unit; unit++) LIST_FIRST[(unsigned char)**unit] = 1;
    for (const char *const *word = DATE_WORDS; *word; word++) LIST_FIRST[(unsigned char)**word] = 1;
}

#endif
