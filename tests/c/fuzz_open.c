/* Opens damaged snapshot files through include/resolverd.h and makes every lookup on each, for
 * tests/integration/test_c_fuzz.py. A file that does not open is an answer; a crash, a hang or
 * a sanitizer report is the bug.
 *
 *   fuzz_open QUERIES SNAPSHOT...
 *
 * QUERIES holds one query per line, strings in hex behind an "x": "k xHEXKEY" a key,
 * "i DECIMAL" an integer token, "s xHEXTOKEN" a string token. Each snapshot is opened with
 * rsv_open (no flags, then RSV_VERIFY | RSV_STRICT), and also viewed from an exact-size heap
 * copy (no flags, RSV_STRICT, RSV_VERIFY), because the zero-filled tail of a mapping's last page
 * hides a short overrun from AddressSanitizer and a heap block does not. Every query is made
 * against every broker and feed index (the first 64 of a forged file with more), and against -1
 * and one past the last. Prints
 * "begin N" before snapshot N (so that a crash names its file), then "N WAY STATUS MESSAGE"
 * for each way; exits 0.
 */
#define _POSIX_C_SOURCE 200809L
#include "resolverd.h"

#include <inttypes.h>

#define MAX_QUERIES 4096
#define MAX_TEXT 1024
#define MAX_NAMES 64 /* brokers and feeds looked up, however many a forged file has */

typedef struct query {
    char kind; /* 'k', 'i' or 's' */
    uint64_t number;
    size_t len;
    char text[MAX_TEXT];
} query;

static query queries[MAX_QUERIES];
static size_t query_count;

static size_t unhex(const char *text, char *out) {
    size_t n = 0;
    if (*text++ != 'x') return 0;
    for (; text[0] && text[1] && n < MAX_TEXT; text += 2) {
        unsigned value;
        if (sscanf(text, "%2x", &value) != 1) break;
        out[n++] = (char)value;
    }
    return n;
}

static int read_queries(const char *path) {
    FILE *file = fopen(path, "r");
    if (file == NULL) return 0;
    static char line[2 * MAX_TEXT + 16];
    while (query_count < MAX_QUERIES && fgets(line, sizeof line, file)) {
        query *q = &queries[query_count];
        q->kind = line[0];
        line[strcspn(line, "\n")] = 0;
        if (q->kind == 'i')
            q->number = strtoull(line + 2, NULL, 10);
        else
            q->len = unhex(line + 2, q->text);
        query_count++;
    }
    fclose(file);
    return 1;
}

/* Reads every byte of an answer, so that AddressSanitizer checks the whole range. */
static uint64_t touch(const char *bytes, size_t len) {
    uint64_t sum = 0;
    for (size_t i = 0; i < len; i++) sum += (unsigned char)bytes[i];
    return sum;
}

static int upto(uint32_t count) {
    return count < MAX_NAMES ? (int)count : MAX_NAMES;
}

static uint64_t exercise(const rsv_snapshot *snap) {
    uint64_t sum = 0;
    const char *text;
    size_t len;
    int brokers = upto(snap->broker_count), feeds = upto(snap->feed_count);
    for (int j = 0; j < brokers; j++)
        sum += (uint64_t)rsv_broker_index(snap, snap->brokers[j].name);
    for (int f = 0; f < feeds; f++) sum += (uint64_t)rsv_feed_index(snap, snap->feeds[f].name);
    for (size_t i = 0; i < query_count; i++) {
        const query *q = &queries[i];
        if (q->kind == 'k') {
            sum += (uint64_t)rsv_ordinal(snap, q->text, q->len);
            sum += (uint64_t)rsv_ordinal_strict(snap, q->text, q->len);
            for (int b = -1; b <= brokers; b++) {
                uint64_t token;
                if (rsv_token(snap, q->text, q->len, b, &token) == RSV_OK) sum += token;
                if (rsv_token_str(snap, q->text, q->len, b, &text, &len) == RSV_OK)
                    sum += touch(text, len);
            }
            continue;
        }
        for (int f = -1; f <= feeds; f++) {
            int rc = q->kind == 'i' ? rsv_key(snap, f, q->number, &text, &len)
                                    : rsv_key_str(snap, f, q->text, q->len, &text, &len);
            if (rc == RSV_OK) sum += touch(text, len);
        }
    }
    return sum;
}

static void report(int index, const char *way, int rc, const char *err) {
    printf("%d %s %s %s\n", index, way, rsv_status_name(rc), rc == RSV_OK ? "" : err);
}

static uint64_t from_file(int index, const char *path, unsigned flags, const char *way) {
    /* Room for the path rsv_open puts before its message: GCC's -Wformat-truncation at -O1
     * objects to a buffer of exactly RSV_ERROR_SIZE. */
    char err[2 * RSV_ERROR_SIZE] = "";
    rsv_snapshot *snap;
    int rc = rsv_open(path, flags, &snap, err, sizeof err);
    report(index, way, rc, err);
    if (rc != RSV_OK) return 0;
    uint64_t sum = exercise(snap);
    rsv_close(snap);
    return sum;
}

static uint64_t from_heap(int index, const unsigned char *bytes, size_t size, unsigned flags,
                          const char *way) {
    char err[RSV_ERROR_SIZE] = "";
    /* An exact-size copy, 16-byte aligned like any malloc block; sections are 64-aligned
     * offsets into it, so the reader's 8-byte loads stay aligned. */
    unsigned char *copy = (unsigned char *)malloc(size ? size : 1);
    rsv_snapshot *snap = (rsv_snapshot *)calloc(1, sizeof(rsv_snapshot));
    if (copy == NULL || snap == NULL) {
        free(copy);
        free(snap);
        report(index, way, RSV_ENOMEM, "out of memory");
        return 0;
    }
    if (size) memcpy(copy, bytes, size);
    snap->base = copy;
    snap->size = size;
    snap->flags = flags;
    int rc = rsv__view(snap, err, sizeof err);
    report(index, way, rc, err);
    uint64_t sum = rc == RSV_OK ? exercise(snap) : 0;
    rsv_close(snap); /* not mapped: frees the tables and the snapshot, not `copy` */
    free(copy);
    return sum;
}

static unsigned char *slurp(const char *path, size_t *size) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) return NULL;
    size_t capacity = 1 << 16, used = 0, got;
    unsigned char *bytes = (unsigned char *)malloc(capacity);
    while (bytes != NULL && (got = fread(bytes + used, 1, capacity - used, file)) > 0) {
        used += got;
        if (used == capacity) {
            unsigned char *grown = (unsigned char *)realloc(bytes, capacity *= 2);
            if (grown == NULL) free(bytes);
            bytes = grown;
        }
    }
    fclose(file);
    *size = used;
    return bytes;
}

int main(int argc, char **argv) {
    if (argc < 2 || !read_queries(argv[1])) {
        fputs("usage: fuzz_open QUERIES SNAPSHOT...\n", stderr);
        return 2;
    }
    uint64_t sum = 0;
    for (int i = 2; i < argc; i++) {
        int index = i - 2;
        printf("begin %d\n", index);
        fflush(stdout);
        sum += from_file(index, argv[i], 0, "file");
        sum += from_file(index, argv[i], RSV_VERIFY | RSV_STRICT, "file-verify-strict");
        size_t size = 0;
        unsigned char *bytes = slurp(argv[i], &size);
        if (bytes == NULL) {
            printf("%d heap cannot read %s\n", index, argv[i]);
            continue;
        }
        sum += from_heap(index, bytes, size, 0, "heap");
        sum += from_heap(index, bytes, size, RSV_STRICT, "heap-strict");
        sum += from_heap(index, bytes, size, RSV_VERIFY, "heap-verify");
        free(bytes);
        fflush(stdout);
    }
    printf("done %" PRIu64 "\n", sum);
    return 0;
}
