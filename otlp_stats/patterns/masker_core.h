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

#include <stdlib.h>
#include <string.h>

#define MASK "<*>"
#define MASK_LEN 3
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

/* Blank-separated tokens into toks/spans, quoted values masked; past max_tokens one mask. Per
 * token, a byte in `changes`: 0 when no rule of mask_token can change it (no CHANGES class
 * byte), so that it is copied as it is. */
static int split_tokens(const char *m, size_t n, size_t max_tokens, Buf *toks, Spans *spans,
                        Buf *changes) {
    int unclosed_double = 0, unclosed_single = 0;
    size_t i = 0;
    for (;;) {
        while (i < n && is_blank((unsigned char)m[i])) i++;
        if (i >= n) break;
        if (spans->len == max_tokens) {
            size_t off = toks->len;
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

/* A pattern cut to max_length bytes at a token's end, with a trailing mask. */
static int cut_pattern(Buf *pattern, size_t max_length) {
    if (pattern->len <= max_length) return 0;
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
static int build_pattern(MaskScratch *s, size_t max_length) {
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
    return cut_pattern(pattern, max_length);
}

/*
 * The pattern for a message with no quoted value and no date word (most messages), in one pass
 * straight into s->pattern: no token copied into toks and masked first. The same pattern as the
 * general path's, whose steps it skips only where they change nothing (tests/patterns/
 * test_masker_c.py holds both equal to the reference). 1: done; 0: the message opens a quote or
 * holds a date word, for the general path; -1: out of memory.
 */
static int mask_direct(MaskScratch *s, const char *m, size_t n, size_t max_tokens,
                       size_t max_length) {
    Buf *out = &s->pattern;
    out->len = 0;
    size_t i = 0, tokens = 0;
    for (;;) {
        while (i < n && (CLASSES[(unsigned char)m[i]] & BLANK)) i++;
        if (i >= n) break;
        if (tokens == max_tokens) {
            if (buf_put(out, " " MASK, MASK_LEN + 1)) return -1;
            break;
        }
        size_t start = i;
        unsigned short seen = 0;
        for (; i < n; i++) {
            unsigned short class = CLASSES[(unsigned char)m[i]];
            seen |= class;
            if (class & (BLANK | QUOTE)) { /* one test per byte for the two rare cases */
                if (class & BLANK) break;
                if (i == start || (CLASSES[(unsigned char)m[i - 1]] & QUOTE_AFTER)) return 0;
            }
        }
        if (is_date_word(m + start, i - start)) return 0;
        if (tokens++ && buf_put(out, " ", 1)) return -1;
        if (!(seen & CHANGES) ? buf_put_word(out, m + start, i - start, n - start)
                              : mask_token(m + start, i - start, &s->pieces, &s->piece_spans, out))
            return -1;
    }
    return cut_pattern(out, max_length) ? -1 : 1;
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
 * memory runs out. max_tokens >= 1, max_length >= 3; masker_init() called once before. */
static int pattern_mask(MaskScratch *s, const char *message, size_t n, size_t max_tokens,
                        size_t max_length, const char **out, size_t *out_len) {
    int direct = mask_direct(s, message, n, max_tokens, max_length);
    if (direct < 0) return -1;
    if (direct) {
        *out = s->pattern.data ? s->pattern.data : "";
        *out_len = s->pattern.len;
        return 0;
    }
    s->toks.len = s->pieces.len = s->masked.len = s->as_mask.len = s->changes.len = 0;
    s->spans.len = s->piece_spans.len = s->masked_spans.len = 0;
    if (split_tokens(message, n, max_tokens, &s->toks, &s->spans, &s->changes)) return -1;
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
    if (build_pattern(s, max_length)) return -1;
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
