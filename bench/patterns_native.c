/* The masker's C rules without Python: CPU ns per message, as the wire scanner would pay.
 *
 * Reads messages from stdin, one per line; masks them all ROUNDS times; prints the median
 * round's CPU nanoseconds per message (CLOCK_PROCESS_CPUTIME_ID). Built and run by
 * bench/patterns_speed.py: cc -O2 -I otlp_stats/patterns bench/patterns_native.c
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "masker_core.h"

#define ROUNDS 9

static long long cpu_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void) {
    Buf input = {0};
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, stdin)) > 0)
        if (buf_put(&input, chunk, got)) return 1;
    Spans lines = {0};
    for (size_t start = 0, i = 0; i <= input.len; i++)
        if (i == input.len || input.data[i] == '\n') {
            if (i > start && spans_push(&lines, start, i - start)) return 1;
            start = i + 1;
        }
    if (!lines.len) return 1;
    masker_init();
    MaskScratch scratch = {0};
    double rounds[ROUNDS];
    size_t checksum = 0;
    for (int r = 0; r < ROUNDS; r++) {
        long long started = cpu_ns();
        for (size_t k = 0; k < lines.len; k++) {
            const char *pattern;
            size_t length;
            int cuts;
            if (pattern_mask(&scratch, input.data + lines.items[k].off, lines.items[k].len, 64, 512,
                             &pattern, &length, &cuts))
                return 1;
            checksum += length;
        }
        rounds[r] = (double)(cpu_ns() - started) / (double)lines.len;
    }
    qsort(rounds, ROUNDS, sizeof *rounds, by_value);
    /* The checksum keeps the compiler from dropping the work. */
    printf("%.0f %zu %zu\n", rounds[ROUNDS / 2], lines.len, checksum);
    return 0;
}
