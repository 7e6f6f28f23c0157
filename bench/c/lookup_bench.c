/* Single lookups through include/resolverd.h, timed: `python -m bench c` builds the snapshot
 * and the query files, compiles this program and reports its figures beside the Python
 * client's (bench/c_reader.py).
 *
 *   lookup_bench SNAPSHOT KEYS TOKENS HOT_INDEX MIN_CALLS
 *
 * KEYS holds the Kite keys in the random query order, one a line; TOKENS their Kite tokens
 * as little-endian uint64 in another random order; HOT_INDEX picks the hot key (and the hot
 * token). Each figure is timed in batches of 1,000 calls with clock_gettime(CLOCK_MONOTONIC)
 * around each batch; random figures pass over the whole query list (again, until MIN_CALLS).
 * Prints one JSON object a line: figure, p50 and p99 ns per call over the batches, calls,
 * and `check`, a sum of the answers that the wrapper compares with the Python client's.
 */
#define _POSIX_C_SOURCE 200809L
#include "resolverd.h"

#include <inttypes.h>
#include <time.h>

#define BATCH 1000
#define HOT_BATCHES 300

/* Hides a value from the optimizer, so that a hot lookup is not hoisted out of its loop. */
#if defined(__GNUC__)
#define OPAQUE(x) __asm__ volatile("" : "+r"(x))
#else
#define OPAQUE(x) ((void)0)
#endif

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* numpy's default percentile (linear interpolation), as bench/timing.py computes it. */
static double percentile(double *values, size_t count, double q) {
    qsort(values, count, sizeof *values, by_value);
    double position = (double)(count - 1) * q / 100.0;
    size_t low = (size_t)position, high = low + 1 < count ? low + 1 : low;
    return values[low] + (values[high] - values[low]) * (position - (double)low);
}

static void emit(const char *figure, double *per_call, size_t batches, uint64_t check) {
    double p99 = percentile(per_call, batches, 99), p50 = percentile(per_call, batches, 50);
    printf("{\"figure\": \"%s\", \"p50\": %.3f, \"p99\": %.3f, \"batches\": %zu, \"calls\": %zu, "
           "\"check\": %" PRIu64 "}\n",
           figure, p50, p99, batches, batches * (size_t)BATCH, check);
    fflush(stdout);
}

static char *slurp(const char *path, size_t *size) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) return NULL;
    fseek(file, 0, SEEK_END);
    long length = ftell(file);
    fseek(file, 0, SEEK_SET);
    char *data = malloc((size_t)length + 1);
    if (data && fread(data, 1, (size_t)length, file) != (size_t)length) {
        free(data);
        data = NULL;
    }
    fclose(file);
    *size = (size_t)length;
    return data;
}

/* Dependent loads at random over `bytes` of memory: the latency a cache miss costs here. */
static void memory_latency(size_t bytes) {
    size_t count = bytes / sizeof(size_t);
    size_t *next = malloc(bytes);
    if (next == NULL) return;
    uint64_t state = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < count; i++) next[i] = i;
    for (size_t i = count - 1; i > 0; i--) { /* Sattolo: one cycle through every slot */
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        size_t j = (size_t)((state >> 17) % i);
        size_t t = next[i];
        next[i] = next[j];
        next[j] = t;
    }
    size_t batches = 2000, at = 0;
    double *per_call = malloc(batches * sizeof(double));
    for (size_t b = 0; b < batches; b++) {
        double start = now_ns();
        for (int i = 0; i < BATCH; i++) at = next[at];
        per_call[b] = (now_ns() - start) / BATCH;
    }
    emit("memory_latency", per_call, batches, (uint64_t)at);
    free(per_call);
    free(next);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fputs("usage: lookup_bench SNAPSHOT KEYS TOKENS HOT_INDEX MIN_CALLS\n", stderr);
        return 2;
    }
    char err[RSV_ERROR_SIZE];
    rsv_snapshot *snap;
    int rc = rsv_open(argv[1], 0, &snap, err, sizeof err);
    if (rc != RSV_OK) {
        fprintf(stderr, "%s\n", err);
        return 3;
    }
    size_t keys_size, tokens_size;
    char *text = slurp(argv[2], &keys_size);
    uint64_t *tokens = (uint64_t *)slurp(argv[3], &tokens_size);
    if (text == NULL || tokens == NULL) {
        fputs("cannot read the query files\n", stderr);
        return 3;
    }
    size_t n = tokens_size / 8, hot = (size_t)strtoull(argv[4], NULL, 10);
    size_t min_calls = (size_t)strtoull(argv[5], NULL, 10);
    const char **keys = malloc(n * sizeof *keys);
    size_t *lengths = malloc(n * sizeof *lengths);
    char *line = text;
    for (size_t i = 0; i < n; i++) {
        char *end = memchr(line, '\n', keys_size - (size_t)(line - text));
        keys[i] = line;
        lengths[i] = (size_t)(end - line);
        line = end + 1;
    }
    int broker = rsv_broker_index(snap, "kite"), feed = rsv_feed_index(snap, "kite");
    size_t batches = (n / BATCH) * ((min_calls + n - 1) / n);
    if (batches < HOT_BATCHES) batches = HOT_BATCHES;
    double *per_call = malloc(batches * sizeof(double));
    uint64_t token, check;
    const char *key;
    size_t key_len;

    check = 0;
    for (size_t b = 0; b < HOT_BATCHES; b++) {
        double start = now_ns();
        for (int i = 0; i < BATCH; i++) {
            const char *k = keys[hot];
            OPAQUE(k);
            if (rsv_token(snap, k, lengths[hot], broker, &token) == RSV_OK) check += token;
        }
        per_call[b] = (now_ns() - start) / BATCH;
    }
    emit("token_hot", per_call, HOT_BATCHES, check);

    check = 0;
    size_t random_batches = (n / BATCH) * ((min_calls + n - 1) / n);
    for (size_t b = 0, q = 0; b < random_batches; b++) {
        double start = now_ns();
        for (int i = 0; i < BATCH; i++, q = q + 1 < n ? q + 1 : 0)
            if (rsv_token(snap, keys[q], lengths[q], broker, &token) == RSV_OK) check += token;
        per_call[b] = (now_ns() - start) / BATCH;
    }
    emit("token_random", per_call, random_batches, check);

    check = 0;
    for (size_t b = 0; b < HOT_BATCHES; b++) {
        double start = now_ns();
        for (int i = 0; i < BATCH; i++) {
            uint64_t t = tokens[hot];
            OPAQUE(t);
            if (rsv_key(snap, feed, t, &key, &key_len) == RSV_OK) check += key_len;
        }
        per_call[b] = (now_ns() - start) / BATCH;
    }
    emit("key_hot", per_call, HOT_BATCHES, check);

    check = 0;
    for (size_t b = 0, q = 0; b < random_batches; b++) {
        double start = now_ns();
        for (int i = 0; i < BATCH; i++, q = q + 1 < n ? q + 1 : 0)
            if (rsv_key(snap, feed, tokens[q], &key, &key_len) == RSV_OK) check += key_len;
        per_call[b] = (now_ns() - start) / BATCH;
    }
    emit("key_random", per_call, random_batches, check);

    memory_latency((size_t)256 << 20);
    free(per_call);
    free(keys);
    free(lengths);
    free(text);
    free(tokens);
    rsv_close(snap);
    return 0;
}
