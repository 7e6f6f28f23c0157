/* resolverd.h: a header-only C99 reader of resolverd snapshots and registries.
 *
 * The binary format is specified once, in the module docstring of resolverd/shm_layout.py
 * (layout version 2); this header implements that specification and nothing else. The
 * conformance vectors in tests/conformance/ (a snapshot and the answers the Python client
 * gives) are checked against this header by tests/integration/test_c_reader.py, so a layout
 * change that breaks either reader fails the tests. The Python client's compiled lookups
 * (resolverd/_speedups.c) are built on this header too.
 *
 * Use (POSIX, little-endian hosts; C99 with GCC or Clang for the __atomic builtins):
 *
 *     #include "resolverd.h"            // cc -std=c99 -O2 -Iinclude ...
 *
 *     char err[RSV_ERROR_SIZE];
 *     rsv_snapshot *snap;
 *     if (rsv_open("/dev/shm/universe.snap", 0, &snap, err, sizeof err) != RSV_OK) { ... }
 *     int kite = rsv_broker_index(snap, "kite");          // -1: no such broker
 *     uint64_t token;
 *     if (rsv_token(snap, "NSE:INFY", 8, kite, &token) == RSV_OK) { ... }   // 408065
 *     const char *key; size_t key_len;
 *     if (rsv_key(snap, rsv_feed_index(snap, "kite"), 408065, &key, &key_len) == RSV_OK) { ... }
 *     rsv_close(snap);
 *
 * Following a named registry (published by `resolverd serve --name universe`):
 *
 *     rsv_follower *f;
 *     rsv_follow_open("/dev/shm", "universe", 0, &f, err, sizeof err);
 *     for (;;) {                                          // the caller's event loop
 *         if (rsv_follow_check(f)) { ... look broker and feed indexes up again ... }
 *         const rsv_snapshot *snap = rsv_follow_snapshot(f);
 *         ... rsv_token(snap, ...) ...
 *     }
 *     rsv_follow_close(f);
 *
 * Rules:
 *
 * 1. No function aborts, prints or exits. Each returns a status (RSV_OK, RSV_MISS, RSV_E*);
 *    the ones that can fail for a reason worth reading also write a message into `err`.
 * 2. A bad file is never trusted: rsv_open validates the header and section table against the
 *    mapped size as the Python reader does (magic, version, sizes, offsets, alignment, each
 *    section's dtype and count, the header checksum, every feed record), and with RSV_VERIFY
 *    also the payload checksum, every stored index, every date and every string's UTF-8, and
 *    that each integer broker's copy of the fingerprints is the key's. The lookups bound-check the ordinals
 *    they read from the file, so even a snapshot with a damaged payload opened without
 *    RSV_VERIFY gives wrong answers at worst, never a read outside the mapping.
 * 3. A published snapshot file is never written, truncated or resized (see shm_layout), which
 *    is what makes a read-only mapping of it safe to read without locks.
 * 4. Lookups allocate nothing and take no lock. Pointers a lookup returns (a key, a string
 *    token) point into the mapping and are valid until the snapshot is closed; for a
 *    follower, see rule 6.
 * 5. Broker and feed indexes belong to one snapshot: another generation may number them
 *    differently (they are sorted by name), so look them up again after a switch.
 * 6. A follower is used by one thread at a time (give each thread its own; the kernel shares
 *    the mapped pages). When rsv_follow_check switches to a new generation, the generation it
 *    replaced stays mapped until the next switch or rsv_follow_release_previous(), so pointers
 *    obtained just before a check stay valid across it; anything older is unmapped. The
 *    publisher unlinks a replaced file only after its grace period, and unlinking never
 *    disturbs a mapping.
 * 7. Only files a trusted user published are mapped (as resolverd/_trust.py does): a regular
 *    file (a symlink is refused), owned by this process's effective user, root, the owner of
 *    the file's directory when no one else may write that directory (systemd's
 *    /run/resolverd), or a user listed in $RESOLVERD_OWNER (names or uids, comma-separated),
 *    and writable by no one but its owner; a followed generation must also belong to the owner
 *    of its control segment. Anyone may create files in /dev/shm: a planted snapshot gives
 *    RSV_EUNTRUSTED and is never resolved from.
 *
 * Memory ordering of the control segment (a seqlock written by the publisher): the reader
 * loads `sequence` with acquire semantics, copies the fields with relaxed atomic loads, issues
 * an acquire fence and loads `sequence` again; equal even values mean the copy is one
 * consistent state (H. Boehm, "Can seqlocks get along with programming language memory
 * models?", 2012). rsv_follow_check's fast path is one acquire load of `sequence`, compared
 * with the last value read stable: on x86-64 a plain MOV, on AArch64 an LDAR. A control
 * segment retired by its publisher (generation 0: renewed past the sequence limit, or purged)
 * sends the follower to the control file's name again, which it follows if it names a
 * generation (a file still at the name that was set to no generation in place is watched on);
 * until one does (purged and not served again yet), each rsv_follow_check looks at the name
 * again once retry_ns (RSV_FOLLOW_RETRY_NS, 1 s) have passed, a clock read between.
 *
 * Hashing is XXH3-64 (xxHash 0.8) from the vendored official header, compiled inline
 * (third_party/xxhash.h, BSD-2-Clause, see third_party/LICENSE). Define RSV_NO_XXHASH_INCLUDE
 * if your program already includes xxhash.h with XXH_INLINE_ALL.
 */
#ifndef RESOLVERD_H
#define RESOLVERD_H

/* POSIX declarations under -std=c99; this only helps when resolverd.h is included first. */
#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE) && !defined(_DEFAULT_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pwd.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#ifndef RSV_NO_XXHASH_INCLUDE
#define XXH_INLINE_ALL
#include "third_party/xxhash.h"
#endif

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif
#ifndef O_NOFOLLOW
#define O_NOFOLLOW 0
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "resolverd.h reads the little-endian snapshot layout in place: little-endian hosts only"
#endif

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define RSV__INLINE static inline __attribute__((unused))
#define RSV__LIKELY(x) __builtin_expect(!!(x), 1)
#define RSV__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define RSV__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define RSV__INLINE static inline
#define RSV__LIKELY(x) (x)
#define RSV__UNLIKELY(x) (x)
#define RSV__PRINTF(f, a)
#endif

/* -- statuses -------------------------------------------------------------------------------- */

#define RSV_OK 0        /* found, or opened */
#define RSV_MISS 1      /* a plain miss: unknown key or token, or the broker does not list it */
#define RSV_ENAME (-1)  /* a broker or feed index out of range (the caller's error) */
#define RSV_EKIND (-2)  /* an int lookup on a string broker or feed, or the other way round */
#define RSV_EIO (-3)    /* the file cannot be opened, stat'ed or mapped (errno is kept) */
#define RSV_ENOENT (-4) /* no such file */
#define RSV_ELAYOUT (-5) /* not a valid snapshot or control segment: the file's fault */
#define RSV_EUNAVAILABLE (-6) /* a registry with no generation published (yet, or any more) */
#define RSV_EINVAL (-7) /* a bad argument (a registry name that is not one) */
#define RSV_ENOMEM (-8)
#define RSV_EUNTRUSTED (-9) /* a file a reader must not resolve from: see rule 7 */

#define RSV_ERROR_SIZE 256 /* enough for every message this header writes */

/* How often a follower whose control segment was retired looks for a successor at its name
 * (rsv_follower.retry_ns), in nanoseconds. */
#ifndef RSV_FOLLOW_RETRY_NS
#define RSV_FOLLOW_RETRY_NS 1000000000u
#endif

/* rsv_open / rsv_follow_open flags */
#define RSV_VERIFY 1u   /* also check the payload checksum and every stored index: O(n) */
#define RSV_STRICT 2u   /* lookups compare key (and string token) bytes, not only 64-bit hashes */
#define RSV_POPULATE 4u /* pre-fault the mapping (MAP_POPULATE where the system has it) */

/* The layout, as shm_layout.py defines it. */
#define RSV_MAGIC "RSLVSNAP"
#define RSV_VERSION_MAJOR 2
#define RSV_ALIGN 64u
#define RSV_HEADER_FIXED_SIZE 128u
#define RSV_SECTION_ENTRY_SIZE 64u
#define RSV_MAX_SECTIONS 65536u
#define RSV_MAX_BUCKET_BITS 32u
#define RSV_NO_TOKEN UINT64_MAX
#define RSV_KIND_INT 1
#define RSV_KIND_STR 2
#define RSV_MIX_MULTIPLIER 0x9E3779B97F4A7C15ull
#define RSV_PILOT_MULTIPLIER 0xBF58476D1CE4E5B9ull
#define RSV_PILOT_INCREMENT 0x94D049BB133111EBull
#define RSV_RECORD_SIZE 64u
/* Dates are days since 1970-01-01 between 0001-01-01 and 9999-12-31 (shm_layout, General). */
#define RSV__FIRST_DAY (-719162)
#define RSV__LAST_DAY 2932896
#define RSV_BROKER_SIZE 48u
#define RSV_FEED_SIZE 80u
#define RSV_CONTROL_MAGIC "RSLVCTRL"
#define RSV_CONTROL_VERSION 1
#define RSV_CONTROL_SIZE 128u
#define RSV_CONTROL_SEQUENCE_OFFSET 16u

/* -- types ----------------------------------------------------------------------------------- */

typedef struct rsv_broker {
    char name[33];
    int kind;              /* RSV_KIND_INT or RSV_KIND_STR */
    uint32_t token_width;  /* 8, or the fixed width of a string token */
    uint32_t first_feed, feed_count;
    const uint64_t *int_pairs;  /* per ordinal i: [2i] its fingerprint, [2i + 1] its token,
                                   RSV_NO_TOKEN if none (int brokers) */
    const char *str_tokens;     /* per ordinal, token_width bytes NUL-padded (string brokers) */
} rsv_broker;

typedef struct rsv_feed {
    char name[33];
    uint32_t broker;
    int kind;
    uint64_t seed, count, slot_count;
    unsigned shift; /* 64 - bucket_bits */
    const uint8_t *pilots;
    const uint32_t *remap;
    const uint64_t *tokens;
    const uint32_t *targets;
} rsv_feed;

typedef struct rsv_snapshot {
    const unsigned char *base;
    size_t size;
    int mapped; /* 1: base is this snapshot's own mapping, unmapped by rsv_close */
    unsigned flags;
    uint16_t version_major, version_minor;
    uint64_t generation, payload_checksum;
    int64_t build_time_ns;
    int32_t trade_date;
    /* the key hash */
    uint64_t n, key_seed, key_slots;
    unsigned key_shift;
    uint32_t key_width;
    const uint8_t *key_pilots;
    const uint32_t *key_remap;
    const uint64_t *fingerprints;
    const char *keys;
    const unsigned char *records;
    uint32_t broker_count, feed_count;
    rsv_broker *brokers;
    rsv_feed *feeds;
} rsv_snapshot;

typedef struct rsv_control {
    uint64_t sequence, generation, payload_checksum, publisher_pid;
    int64_t updated_ns;
    char snapshot[65];
} rsv_control;

typedef struct rsv_follower {
    char *directory;
    char *name;
    unsigned flags;
    const unsigned char *control; /* the control segment, mapped read-only */
    uid_t owner;                  /* the control segment's owner: every generation's too */
    dev_t control_dev;            /* the control segment's file, to tell it from a successor */
    ino_t control_ino;            /* ... at its name (rsv__follow_renew) */
    uint64_t sequence;            /* the `sequence` the current generation was read under */
    rsv_snapshot *current, *previous;
    uint64_t swaps, failed_refreshes;
    char last_error[RSV_ERROR_SIZE];
    /* Retired with no successor to follow yet: the CLOCK_MONOTONIC time (ns) from which a
     * check looks at the name again, every retry_ns (RSV_FOLLOW_RETRY_NS after opening). */
    uint64_t retry_at_ns, retry_ns;
} rsv_follower;

/* -- small helpers --------------------------------------------------------------------------- */

RSV__INLINE RSV__PRINTF(3, 4) int rsv__fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err != NULL && errlen > 0) {
        va_list args;
        va_start(args, fmt);
        vsnprintf(err, errlen, fmt, args);
        va_end(args);
    }
    return RSV_ELAYOUT;
}

RSV__INLINE uint64_t rsv__u64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
RSV__INLINE uint32_t rsv__u32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
RSV__INLINE uint16_t rsv__u16(const unsigned char *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

RSV__INLINE uint64_t rsv__mix(uint64_t x) {
    uint64_t y = x * RSV_MIX_MULTIPLIER;
    return y ^ (y >> 32);
}

/* PILOT_MIX[p] of the spec, computed rather than tabled: two multiplies, cheaper than a
 * cache miss on a table. */
RSV__INLINE uint64_t rsv__pilot_mix(uint8_t p) {
    return rsv__mix((uint64_t)p * RSV_PILOT_MULTIPLIER + RSV_PILOT_INCREMENT);
}

/* slot_to_ordinal of the spec. The remap entry is read from the file, so the caller checks
 * the result against n before using it. */
RSV__INLINE uint64_t rsv__slot(uint64_t h, const uint8_t *pilots, unsigned shift, uint64_t slots,
                               uint64_t n, const uint32_t *remap) {
    uint64_t s = (h ^ rsv__pilot_mix(pilots[h >> shift])) % slots;
    return s < n ? s : remap[s - n];
}

RSV__INLINE char *rsv__strdup(const char *text) {
    size_t len = strlen(text) + 1;
    char *copy = (char *)malloc(len);
    if (copy != NULL) memcpy(copy, text, len);
    return copy;
}

/* The length of a NUL-padded fixed-width string. */
RSV__INLINE size_t rsv__padded_len(const char *p, size_t width) {
    const char *end = (const char *)memchr(p, 0, width);
    return end ? (size_t)(end - p) : width;
}

/* -- lookups --------------------------------------------------------------------------------- */

/* The ordinal a key hashes to, unchecked (< n unless the file is damaged), and its hash. */
RSV__INLINE uint64_t rsv__key_slot(const rsv_snapshot *snap, const char *key, size_t key_len,
                                   uint64_t *h) {
    *h = XXH3_64bits_withSeed(key, key_len, snap->key_seed);
    return rsv__slot(*h, snap->key_pilots, snap->key_shift, snap->key_slots, snap->n,
                     snap->key_remap);
}

/* The key's ordinal (its row in every instrument-indexed section) by fingerprint, or -1. */
RSV__INLINE int64_t rsv_ordinal(const rsv_snapshot *snap, const char *key, size_t key_len) {
    uint64_t h, s = rsv__key_slot(snap, key, key_len, &h);
    return (s < snap->n && snap->fingerprints[s] == h) ? (int64_t)s : -1;
}

/* Whether ordinal s (< n) stores exactly these key bytes, NUL padding aside: strict mode's
 * check after the fingerprint's. */
RSV__INLINE int rsv__stores_key(const rsv_snapshot *snap, uint64_t s, const char *key,
                                size_t key_len) {
    if (key_len > snap->key_width) return 0;
    const char *stored = snap->keys + (size_t)s * snap->key_width;
    if (memcmp(stored, key, key_len) != 0) return 0;
    return key_len == snap->key_width || stored[key_len] == 0;
}

/* The key's ordinal comparing the stored key bytes as well as the fingerprint, or -1. */
RSV__INLINE int64_t rsv_ordinal_strict(const rsv_snapshot *snap, const char *key,
                                       size_t key_len) {
    int64_t s = rsv_ordinal(snap, key, key_len);
    return (s >= 0 && rsv__stores_key(snap, (uint64_t)s, key, key_len)) ? s : -1;
}

RSV__INLINE int64_t rsv__find(const rsv_snapshot *snap, const char *key, size_t key_len) {
    return (snap->flags & RSV_STRICT) ? rsv_ordinal_strict(snap, key, key_len)
                                      : rsv_ordinal(snap, key, key_len);
}

/* The index of broker `name` in this snapshot, -1 if it has none of that name. */
RSV__INLINE int rsv_broker_index(const rsv_snapshot *snap, const char *name) {
    for (uint32_t j = 0; j < snap->broker_count; j++)
        if (strcmp(snap->brokers[j].name, name) == 0) return (int)j;
    return -1;
}

RSV__INLINE int rsv_feed_index(const rsv_snapshot *snap, const char *name) {
    for (uint32_t f = 0; f < snap->feed_count; f++)
        if (strcmp(snap->feeds[f].name, name) == 0) return (int)f;
    return -1;
}

/* An int broker's token for a key: RSV_OK and *out, RSV_MISS, RSV_ENAME or RSV_EKIND. */
RSV__INLINE int rsv_token(const rsv_snapshot *snap, const char *key, size_t key_len, int broker,
                          uint64_t *out) {
    if (RSV__UNLIKELY(broker < 0 || (uint32_t)broker >= snap->broker_count)) return RSV_ENAME;
    const rsv_broker *b = &snap->brokers[broker];
    if (RSV__UNLIKELY(b->kind != RSV_KIND_INT)) return RSV_EKIND;
    const uint64_t *pair;
    if (snap->flags & RSV_STRICT) {
        int64_t s = rsv_ordinal_strict(snap, key, key_len);
        if (s < 0) return RSV_MISS;
        pair = b->int_pairs + 2 * (uint64_t)s;
    } else {
        /* The broker's own copy of the fingerprint: one cache line for check and answer. */
        uint64_t h, s = rsv__key_slot(snap, key, key_len, &h);
        if (s >= snap->n) return RSV_MISS;
        pair = b->int_pairs + 2 * s;
        if (pair[0] != h) return RSV_MISS;
    }
    if (pair[1] == RSV_NO_TOKEN) return RSV_MISS;
    *out = pair[1];
    return RSV_OK;
}

/* A string broker's token for a key, pointing into the mapping (not NUL-terminated). */
RSV__INLINE int rsv_token_str(const rsv_snapshot *snap, const char *key, size_t key_len,
                              int broker, const char **token, size_t *token_len) {
    if (RSV__UNLIKELY(broker < 0 || (uint32_t)broker >= snap->broker_count)) return RSV_ENAME;
    const rsv_broker *b = &snap->brokers[broker];
    if (RSV__UNLIKELY(b->kind != RSV_KIND_STR)) return RSV_EKIND;
    int64_t s = rsv__find(snap, key, key_len);
    if (s < 0) return RSV_MISS;
    const char *t = b->str_tokens + (size_t)s * b->token_width;
    size_t len = rsv__padded_len(t, b->token_width);
    if (len == 0) return RSV_MISS;
    *token = t;
    *token_len = len;
    return RSV_OK;
}

RSV__INLINE int rsv__key_at(const rsv_snapshot *snap, uint64_t ordinal, const char **key,
                            size_t *key_len) {
    if (RSV__UNLIKELY(ordinal >= snap->n)) return RSV_MISS; /* a damaged target */
    const char *k = snap->keys + (size_t)ordinal * snap->key_width;
    *key = k;
    *key_len = rsv__padded_len(k, snap->key_width);
    return RSV_OK;
}

/* An int feed's token -> its key, pointing into the mapping (not NUL-terminated). */
RSV__INLINE int rsv_key(const rsv_snapshot *snap, int feed, uint64_t token, const char **key,
                        size_t *key_len) {
    if (RSV__UNLIKELY(feed < 0 || (uint32_t)feed >= snap->feed_count)) return RSV_ENAME;
    const rsv_feed *f = &snap->feeds[feed];
    if (RSV__UNLIKELY(f->kind != RSV_KIND_INT)) return RSV_EKIND;
    uint64_t s = rsv__slot(rsv__mix(token ^ f->seed), f->pilots, f->shift, f->slot_count,
                           f->count, f->remap);
    if (s >= f->count || f->tokens[s] != token) return RSV_MISS;
    return rsv__key_at(snap, f->targets[s], key, key_len);
}

/* A string feed's token -> its key. In strict mode the broker's stored token must equal it
 * byte for byte; otherwise its 64-bit hash decides, as for keys. */
RSV__INLINE int rsv_key_str(const rsv_snapshot *snap, int feed, const char *token,
                            size_t token_len, const char **key, size_t *key_len) {
    if (RSV__UNLIKELY(feed < 0 || (uint32_t)feed >= snap->feed_count)) return RSV_ENAME;
    const rsv_feed *f = &snap->feeds[feed];
    if (RSV__UNLIKELY(f->kind != RSV_KIND_STR)) return RSV_EKIND;
    uint64_t h = XXH3_64bits_withSeed(token, token_len, f->seed);
    uint64_t s = rsv__slot(h, f->pilots, f->shift, f->slot_count, f->count, f->remap);
    if (s >= f->count || f->tokens[s] != h) return RSV_MISS;
    uint64_t target = f->targets[s];
    if (target >= snap->n) return RSV_MISS;
    if (snap->flags & RSV_STRICT) {
        const rsv_broker *b = &snap->brokers[f->broker];
        if (b->kind != RSV_KIND_STR || token_len == 0 || token_len > b->token_width) return RSV_MISS;
        const char *stored = b->str_tokens + (size_t)target * b->token_width;
        if (rsv__padded_len(stored, b->token_width) != token_len ||
            memcmp(stored, token, token_len) != 0)
            return RSV_MISS;
    }
    return rsv__key_at(snap, target, key, key_len);
}

/* -- opening and validating ------------------------------------------------------------------ */

typedef struct rsv__section {
    char name[33];
    char dtype[9];
    uint64_t offset, nbytes, count;
} rsv__section;

/* The itemsize of a section dtype string, 0 if the layout does not use it
 * (shm_layout.section_dtype). */
RSV__INLINE uint64_t rsv__itemsize(const char *dtype) {
    if (strcmp(dtype, "record") == 0) return RSV_RECORD_SIZE;
    if (strcmp(dtype, "broker") == 0) return RSV_BROKER_SIZE;
    if (strcmp(dtype, "feed") == 0) return RSV_FEED_SIZE;
    if (strcmp(dtype, "<u8") == 0) return 8;
    if (strcmp(dtype, "<u4") == 0) return 4;
    if (strcmp(dtype, "|u1") == 0) return 1;
    if (dtype[0] == '|' && dtype[1] == 'S' && dtype[2] != 0) {
        uint64_t width = 0;
        for (const char *p = dtype + 2; *p; p++) {
            if (*p < '0' || *p > '9') return 0;
            width = width * 10 + (uint64_t)(*p - '0');
        }
        if (width > 0 && width <= 4096 && width % 8 == 0) return width;
    }
    return 0;
}

/* A fixed-width ASCII name field as a C string; 0 if it holds a byte that is not ASCII or a
 * NUL before a non-NUL byte. */
RSV__INLINE int rsv__ascii(const unsigned char *field, size_t width, char *out) {
    size_t len = width;
    while (len > 0 && field[len - 1] == 0) len--;
    for (size_t i = 0; i < len; i++)
        if (field[i] == 0 || field[i] > 127) return 0;
    memcpy(out, field, len);
    out[len] = 0;
    return 1;
}

/* Names at `stride` bytes apart, ordered by text and then by position. */
RSV__INLINE int rsv__by_text(const void *a, const void *b) {
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    int c = strcmp(x, y);
    return c != 0 ? c : (x > y) - (x < y);
}

/* The index at which a loop over the `count` names (`stride` bytes apart from `first`) would
 * first meet a name it has met before, as the Python reader reports it; -1 if every name is
 * unique, -2 out of memory. Sorting keeps a forged table of many names from costing n^2. */
RSV__INLINE int64_t rsv__twice(const char *first, size_t stride, uint32_t count) {
    if (count < 2) return -1;
    const char **names = (const char **)malloc((size_t)count * sizeof *names);
    if (names == NULL) return -2;
    for (uint32_t i = 0; i < count; i++) names[i] = first + (size_t)i * stride;
    qsort(names, count, sizeof *names, rsv__by_text);
    int64_t found = -1;
    for (uint32_t i = 1; i < count; i++) {
        /* In a run of equal names the second is the first repeat a loop in order meets. */
        if (strcmp(names[i], names[i - 1]) == 0 && (i < 2 || strcmp(names[i - 1], names[i - 2]))) {
            int64_t at = (int64_t)((size_t)(names[i] - first) / stride);
            if (found < 0 || at < found) found = at;
        }
    }
    free(names);
    return found;
}

RSV__INLINE int rsv__by_name(const void *a, const void *b) {
    return strcmp(((const rsv__section *)a)->name, ((const rsv__section *)b)->name);
}

/* A section by name, in a table sorted by name (rsv__view sorts its copy once it is read):
 * a binary search, because a forged table of 65536 sections searched linearly for every
 * expected section cost billions of comparisons, seconds of rsv_open. */
RSV__INLINE const rsv__section *rsv__get(const rsv__section *table, uint32_t count,
                                         const char *name) {
    uint32_t low = 0, high = count;
    while (low < high) {
        uint32_t mid = low + (high - low) / 2;
        int order = strcmp(table[mid].name, name);
        if (order == 0) return &table[mid];
        if (order < 0)
            low = mid + 1;
        else
            high = mid;
    }
    return NULL;
}

/* _expect of shm_layout: present, with this dtype (NULL: any) and this count. */
RSV__INLINE int rsv__expect(const rsv__section *table, uint32_t count, const char *name,
                            const char *dtype, uint64_t items, const rsv__section **found,
                            char *err, size_t errlen) {
    const rsv__section *s = rsv__get(table, count, name);
    if (s == NULL) return rsv__fail(err, errlen, "section '%s' is missing", name);
    if (dtype != NULL && strcmp(s->dtype, dtype) != 0)
        return rsv__fail(err, errlen, "section '%s': dtype %s is not %s", name, s->dtype, dtype);
    if (s->count != items)
        return rsv__fail(err, errlen, "section '%s': %llu items, expected %llu", name,
                         (unsigned long long)s->count, (unsigned long long)items);
    if (found) *found = s;
    return RSV_OK;
}

RSV__INLINE uint64_t rsv__header_checksum(const unsigned char *base, uint64_t header_size) {
    static const unsigned char zeros[8] = {0};
    XXH3_state_t state;
    XXH3_64bits_reset(&state);
    XXH3_64bits_update(&state, base, 120);
    XXH3_64bits_update(&state, zeros, 8);
    XXH3_64bits_update(&state, base + 128, (size_t)(header_size - 128));
    return XXH3_64bits_digest(&state);
}

RSV__INLINE void rsv_close(rsv_snapshot *snap) {
    if (snap == NULL) return;
    if (snap->mapped && snap->base != NULL) munmap((void *)snap->base, snap->size);
    free(snap->brokers);
    free(snap->feeds);
    free(snap);
}

/* Whether bytes [p, p + len) are UTF-8 as Python's strict codec reads it: no overlong forms,
 * no surrogates, nothing past U+10FFFF. NUL padding is ASCII, so a padded row is checked whole. */
RSV__INLINE int rsv__utf8(const unsigned char *p, size_t len) {
    size_t i = 0;
    while (i < len) {
        unsigned char c = p[i];
        if (c < 0x80) { i++; continue; }
        size_t need;
        unsigned char low = 0x80, high = 0xBF; /* the range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) low = 0xA0;       /* overlong */
            else if (c == 0xED) high = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) low = 0x90;       /* overlong */
            else if (c == 0xF4) high = 0x8F; /* past U+10FFFF */
        } else return 0;
        if (len - i <= need) return 0;
        if (p[i + 1] < low || p[i + 1] > high) return 0;
        for (size_t k = 2; k <= need; k++)
            if ((p[i + k] & 0xC0) != 0x80) return 0;
        i += need + 1;
    }
    return 1;
}

/* Whether each of `count` NUL-padded rows of `width` bytes is UTF-8 by itself. */
RSV__INLINE int rsv__utf8_rows(const char *rows, uint64_t count, size_t width) {
    for (uint64_t i = 0; i < count; i++)
        if (!rsv__utf8((const unsigned char *)rows + i * width, width)) return 0;
    return 1;
}

/* The O(n) index checks of the Python reader's verify=True (Resolver._verify_indexes). */
RSV__INLINE int rsv__verify_indexes(const rsv_snapshot *snap, const uint32_t *offsets,
                                    uint64_t string_count, char *err, size_t errlen) {
    for (uint64_t i = 0; i < string_count; i++)
        if (offsets[i + 1] < offsets[i])
            return rsv__fail(err, errlen, "section 'strings.offsets' is not in ascending order");
    for (uint64_t i = 0; i < snap->key_slots - snap->n; i++)
        if (snap->key_remap[i] >= snap->n)
            return rsv__fail(err, errlen, "section 'key.remap' holds an ordinal out of range");
    static const char *const fields[4] = {"exchange", "segment", "instrument_type", "name"};
    for (uint64_t i = 0; i < snap->n; i++)
        for (int k = 0; k < 4; k++)
            if (rsv__u32(snap->records + i * RSV_RECORD_SIZE + 32 + 4 * k) >= string_count)
                return rsv__fail(err, errlen,
                                 "section 'records': field %s holds a string index out of range",
                                 fields[k]);
    for (uint64_t i = 0; i < snap->n; i++) {
        const unsigned char *record = snap->records + i * RSV_RECORD_SIZE;
        int32_t expiry = (int32_t)rsv__u32(record + 24);
        if (expiry < RSV__FIRST_DAY || expiry > RSV__LAST_DAY)
            return rsv__fail(err, errlen, "section 'records': field expiry holds a day that is "
                             "not a date");
        if (!rsv__utf8(record + 48, 12))
            return rsv__fail(err, errlen, "section 'records': field isin: a string is not UTF-8");
    }
    if (!rsv__utf8_rows(snap->keys, snap->n, snap->key_width))
        return rsv__fail(err, errlen, "section 'keys': a string is not UTF-8");
    for (uint32_t j = 0; j < snap->broker_count; j++) {
        const rsv_broker *b = &snap->brokers[j];
        if (b->kind != RSV_KIND_INT) {
            if (!rsv__utf8_rows(b->str_tokens, snap->n, b->token_width))
                return rsv__fail(err, errlen, "section 'tokens.%u': a string is not UTF-8",
                                 (unsigned)j);
            continue;
        }
        for (uint64_t i = 0; i < snap->n; i++)
            if (b->int_pairs[2 * i] != snap->fingerprints[i])
                return rsv__fail(err, errlen, "section 'tokens.%u': its fingerprints differ "
                                 "from 'key.fingerprints'", (unsigned)j);
    }
    for (uint32_t f = 0; f < snap->feed_count; f++) {
        const rsv_feed *feed = &snap->feeds[f];
        for (uint64_t i = 0; i < feed->slot_count - feed->count; i++)
            if (feed->remap[i] >= feed->count)
                return rsv__fail(err, errlen, "feed %s: remap holds an ordinal out of range",
                                 feed->name);
        for (uint64_t i = 0; i < feed->count; i++)
            if (feed->targets[i] >= snap->n)
                return rsv__fail(err, errlen, "feed %s: targets hold an ordinal out of range",
                                 feed->name);
    }
    return RSV_OK;
}

RSV__INLINE int rsv__load(rsv_snapshot *snap, const rsv__section *table, uint32_t count,
                          char *err, size_t errlen) {
    const unsigned char *base = snap->base;
    const uint64_t n = snap->n;
    const rsv__section *s = NULL;
    int rc;
#define RSV__EXPECT(name, dtype, items)                                                  \
    do {                                                                                 \
        if ((rc = rsv__expect(table, count, name, dtype, items, &s, err, errlen)) != RSV_OK) \
            return rc;                                                                   \
    } while (0)
    RSV__EXPECT("key.pilots", "|u1", (uint64_t)1 << (64 - snap->key_shift));
    snap->key_pilots = base + s->offset;
    RSV__EXPECT("key.remap", "<u4", snap->key_slots - n);
    snap->key_remap = (const uint32_t *)(base + s->offset);
    RSV__EXPECT("key.fingerprints", "<u8", n);
    snap->fingerprints = (const uint64_t *)(base + s->offset);
    char keys_dtype[16];
    snprintf(keys_dtype, sizeof keys_dtype, "|S%u", (unsigned)snap->key_width);
    s = rsv__get(table, count, "keys");
    if (s == NULL) return rsv__fail(err, errlen, "section 'keys' is missing");
    if (rsv__itemsize(s->dtype) != snap->key_width || s->dtype[1] != 'S')
        return rsv__fail(err, errlen, "section 'keys': dtype %s is not %s", s->dtype, keys_dtype);
    RSV__EXPECT("keys", NULL, n);
    snap->keys = (const char *)(base + s->offset);
    RSV__EXPECT("records", "record", n);
    snap->records = base + s->offset;
    s = rsv__get(table, count, "strings.offsets");
    if (s == NULL || s->count < 1)
        return rsv__fail(err, errlen, "section 'strings.offsets' is missing or empty");
    RSV__EXPECT("strings.offsets", "<u4", s->count);
    const uint32_t *offsets = (const uint32_t *)(base + s->offset);
    uint64_t string_count = s->count - 1;
    s = rsv__get(table, count, "strings.data");
    if (s == NULL || strcmp(s->dtype, "|u1") != 0)
        return rsv__fail(err, errlen, "section 'strings.data' is missing or has a bad dtype");
    if (offsets[string_count] > s->nbytes)
        return rsv__fail(err, errlen, "section 'strings.offsets' points past 'strings.data'");
    RSV__EXPECT("brokers", "broker", snap->broker_count);
    const unsigned char *brokers = base + s->offset;
    RSV__EXPECT("feeds", "feed", snap->feed_count);
    const unsigned char *feeds = base + s->offset;
    /* Every expected section is present and names are unique, so there is no other section
     * exactly when the counts agree (shm_layout: "unknown sections"). */
    uint64_t expected = 9 + (uint64_t)snap->broker_count + 4 * (uint64_t)snap->feed_count;
    if (expected != count)
        return rsv__fail(err, errlen,
                         "the section table has %u sections; %u brokers and %u feeds need %llu",
                         (unsigned)count, (unsigned)snap->broker_count,
                         (unsigned)snap->feed_count, (unsigned long long)expected);

    snap->brokers = (rsv_broker *)calloc(snap->broker_count ? snap->broker_count : 1,
                                         sizeof(rsv_broker));
    snap->feeds = (rsv_feed *)calloc(snap->feed_count ? snap->feed_count : 1, sizeof(rsv_feed));
    if (snap->brokers == NULL || snap->feeds == NULL) {
        rsv__fail(err, errlen, "out of memory");
        return RSV_ENOMEM;
    }
    char name[48];
    for (uint32_t f = 0; f < snap->feed_count; f++) {
        const unsigned char *r = feeds + (size_t)f * RSV_FEED_SIZE;
        rsv_feed *feed = &snap->feeds[f];
        if (!rsv__ascii(r, 32, feed->name))
            return rsv__fail(err, errlen, "feed %u: field name is not ASCII", (unsigned)f);
        feed->broker = rsv__u32(r + 32);
        feed->kind = r[36];
        feed->seed = rsv__u64(r + 40);
        feed->count = rsv__u64(r + 48);
        feed->slot_count = rsv__u64(r + 56);
        uint32_t bits = rsv__u32(r + 64);
        if (bits < 1 || bits > RSV_MAX_BUCKET_BITS)
            return rsv__fail(err, errlen, "feed %u: field bucket_bits %u is out of range",
                             (unsigned)f, (unsigned)bits);
        if (feed->slot_count < feed->count || feed->slot_count == 0 ||
            feed->slot_count >= ((uint64_t)1 << 32))
            return rsv__fail(err, errlen, "feed %u: field slot_count %llu is out of range for "
                             "count %llu", (unsigned)f, (unsigned long long)feed->slot_count,
                             (unsigned long long)feed->count);
        if (feed->broker >= snap->broker_count)
            return rsv__fail(err, errlen, "feed %u: field broker %u is out of range",
                             (unsigned)f, (unsigned)feed->broker);
        if (feed->kind != RSV_KIND_INT && feed->kind != RSV_KIND_STR)
            return rsv__fail(err, errlen, "feed %u: field kind %d is unknown", (unsigned)f,
                             feed->kind);
        feed->shift = 64 - bits;
        snprintf(name, sizeof name, "feed.%u.pilots", (unsigned)f);
        RSV__EXPECT(name, "|u1", (uint64_t)1 << bits);
        feed->pilots = base + s->offset;
        snprintf(name, sizeof name, "feed.%u.remap", (unsigned)f);
        RSV__EXPECT(name, "<u4", feed->slot_count - feed->count);
        feed->remap = (const uint32_t *)(base + s->offset);
        snprintf(name, sizeof name, "feed.%u.tokens", (unsigned)f);
        RSV__EXPECT(name, "<u8", feed->count);
        feed->tokens = (const uint64_t *)(base + s->offset);
        snprintf(name, sizeof name, "feed.%u.targets", (unsigned)f);
        RSV__EXPECT(name, "<u4", feed->count);
        feed->targets = (const uint32_t *)(base + s->offset);
    }
    for (uint32_t j = 0; j < snap->broker_count; j++) {
        const unsigned char *r = brokers + (size_t)j * RSV_BROKER_SIZE;
        rsv_broker *b = &snap->brokers[j];
        if (!rsv__ascii(r, 32, b->name))
            return rsv__fail(err, errlen, "broker %u: field name is not ASCII", (unsigned)j);
        b->kind = r[32];
        b->token_width = rsv__u32(r + 36);
        b->first_feed = rsv__u32(r + 40);
        b->feed_count = rsv__u32(r + 44);
        if ((uint64_t)b->first_feed + b->feed_count > snap->feed_count)
            return rsv__fail(err, errlen, "broker %s: fields first_feed/feed_count point past "
                             "feeds", b->name);
        snprintf(name, sizeof name, "tokens.%u", (unsigned)j);
        s = rsv__get(table, count, name);
        if (s == NULL) return rsv__fail(err, errlen, "section '%s' is missing", name);
        /* The Python reader takes a string column's width from the broker record; here the
         * record must also agree with the section, since the width bounds every read. */
        int is_int = b->kind == RSV_KIND_INT && strcmp(s->dtype, "<u8") == 0;
        int is_str = b->kind == RSV_KIND_STR && s->dtype[1] == 'S' &&
                     rsv__itemsize(s->dtype) == b->token_width;
        if (!is_int && !is_str)
            return rsv__fail(err, errlen, "section '%s': dtype %s does not fit broker %s (kind "
                             "%d, token_width %u)", name, s->dtype, b->name, b->kind,
                             (unsigned)b->token_width);
        RSV__EXPECT(name, NULL, is_int ? 2 * n : n);
        if (is_int)
            b->int_pairs = (const uint64_t *)(base + s->offset);
        else
            b->str_tokens = (const char *)(base + s->offset);
    }
    /* As the Python reader: a name lookup must find one broker or feed, and a feed's tokens
     * are of its broker's kind (rsv_key checks the feed's, rsv_token the broker's). */
    for (uint32_t f = 0; f < snap->feed_count; f++) {
        const rsv_feed *feed = &snap->feeds[f];
        const rsv_broker *owner = &snap->brokers[feed->broker];
        if (feed->kind != owner->kind)
            return rsv__fail(err, errlen, "feed %u: field kind %d is not the kind of broker %s",
                             (unsigned)f, feed->kind, owner->name);
    }
    int64_t twice = rsv__twice(snap->brokers[0].name, sizeof(rsv_broker), snap->broker_count);
    if (twice >= 0)
        return rsv__fail(err, errlen, "broker %u: name '%s' appears twice", (unsigned)twice,
                         snap->brokers[twice].name);
    int64_t twice_feed = twice == -1 ? rsv__twice(snap->feeds[0].name, sizeof(rsv_feed),
                                                  snap->feed_count)
                                     : -2;
    if (twice_feed >= 0)
        return rsv__fail(err, errlen, "feed %u: name '%s' appears twice", (unsigned)twice_feed,
                         snap->feeds[twice_feed].name);
    if (twice_feed == -2) {
        rsv__fail(err, errlen, "out of memory");
        return RSV_ENOMEM;
    }
#undef RSV__EXPECT
    if (snap->flags & RSV_VERIFY) return rsv__verify_indexes(snap, offsets, string_count, err,
                                                             errlen);
    return RSV_OK;
}

/* Validate a snapshot held in memory (`size` bytes at `base`, 8-byte aligned at least) and
 * fill `snap` (zeroed by the caller). shm_layout.read_header, _check_sections_v1 and
 * check_feed, in that order; RSV_VERIFY adds verify_payload and the index checks. */
RSV__INLINE int rsv__view(rsv_snapshot *snap, char *err, size_t errlen) {
    const unsigned char *base = snap->base;
    const uint64_t size = snap->size;
    if (size < RSV_HEADER_FIXED_SIZE)
        return rsv__fail(err, errlen, "truncated: %llu bytes is smaller than the 128-byte header",
                         (unsigned long long)size);
    if (memcmp(base, RSV_MAGIC, 8) != 0)
        return rsv__fail(err, errlen, "bad magic: not a resolverd snapshot");
    snap->version_major = rsv__u16(base + 8);
    snap->version_minor = rsv__u16(base + 10);
    if (snap->version_major != RSV_VERSION_MAJOR)
        return rsv__fail(err, errlen, "layout version %u.%u is not supported (this reader: 2.x)",
                         (unsigned)snap->version_major, (unsigned)snap->version_minor);
    uint64_t header_size = rsv__u32(base + 12);
    uint32_t section_count = rsv__u32(base + 36);
    if (section_count == 0 || section_count > RSV_MAX_SECTIONS)
        return rsv__fail(err, errlen, "header field section_count: %u is out of range",
                         (unsigned)section_count);
    uint64_t wanted = (RSV_HEADER_FIXED_SIZE + RSV_SECTION_ENTRY_SIZE * (uint64_t)section_count +
                       RSV_ALIGN - 1) / RSV_ALIGN * RSV_ALIGN;
    if (header_size != wanted)
        return rsv__fail(err, errlen, "header field header_size: %llu does not fit %u sections",
                         (unsigned long long)header_size, (unsigned)section_count);
    uint64_t file_size = rsv__u64(base + 48);
    if (file_size != size)
        return rsv__fail(err, errlen, "truncated or padded: header field file_size says %llu "
                         "bytes, the mapping has %llu", (unsigned long long)file_size,
                         (unsigned long long)size);
    if (header_size > size)
        return rsv__fail(err, errlen, "truncated: the section table ends at %llu, past %llu",
                         (unsigned long long)header_size, (unsigned long long)size);
    if (rsv__u64(base + 120) != rsv__header_checksum(base, header_size))
        return rsv__fail(err, errlen,
                         "header checksum mismatch: the header or section table is damaged");
    snap->generation = rsv__u64(base + 16);
    snap->build_time_ns = (int64_t)rsv__u64(base + 24);
    snap->trade_date = (int32_t)rsv__u32(base + 32);
    snap->n = rsv__u64(base + 40);
    snap->payload_checksum = rsv__u64(base + 56);
    snap->key_seed = rsv__u64(base + 64);
    uint32_t bits = rsv__u32(base + 72);
    snap->key_width = rsv__u32(base + 76);
    snap->key_slots = rsv__u64(base + 80);
    snap->broker_count = rsv__u32(base + 88);
    snap->feed_count = rsv__u32(base + 92);
    if (bits < 1 || bits > RSV_MAX_BUCKET_BITS)
        return rsv__fail(err, errlen, "header field key_bucket_bits: %u is out of range",
                         (unsigned)bits);
    snap->key_shift = 64 - bits;
    /* S >= 1 even for n == 0: every lookup takes its hash modulo S. */
    if (snap->key_slots < snap->n || snap->key_slots == 0 ||
        snap->key_slots >= ((uint64_t)1 << 32))
        return rsv__fail(err, errlen, "header field key_slot_count: %llu is out of range for "
                         "n=%llu", (unsigned long long)snap->key_slots,
                         (unsigned long long)snap->n);
    if (snap->key_width == 0 || snap->key_width % 8)
        return rsv__fail(err, errlen, "header field key_width: %u is not a positive multiple "
                         "of 8", (unsigned)snap->key_width);

    rsv__section *table = (rsv__section *)calloc(section_count, sizeof(rsv__section));
    if (table == NULL) {
        rsv__fail(err, errlen, "out of memory");
        return RSV_ENOMEM;
    }
    int rc = RSV_OK;
    for (uint32_t i = 0; i < section_count && rc == RSV_OK; i++) {
        const unsigned char *e = base + RSV_HEADER_FIXED_SIZE + (size_t)i * RSV_SECTION_ENTRY_SIZE;
        rsv__section *t = &table[i];
        if (!rsv__ascii(e, 32, t->name) || !rsv__ascii(e + 32, 8, t->dtype)) {
            rc = rsv__fail(err, errlen, "section table entry %u: name or dtype is not ASCII",
                           (unsigned)i);
            break;
        }
        t->offset = rsv__u64(e + 40);
        t->nbytes = rsv__u64(e + 48);
        t->count = rsv__u64(e + 56);
        uint64_t itemsize = rsv__itemsize(t->dtype);
        if (itemsize == 0)
            rc = rsv__fail(err, errlen, "section '%s': section dtype '%s' is not one this "
                           "layout uses", t->name, t->dtype);
        else if (t->offset % RSV_ALIGN || t->offset < header_size)
            rc = rsv__fail(err, errlen, "section '%s': offset %llu is misaligned or inside the "
                           "header", t->name, (unsigned long long)t->offset);
        else if (t->count > UINT64_MAX / itemsize || t->nbytes != t->count * itemsize)
            rc = rsv__fail(err, errlen, "section '%s': nbytes %llu is not count %llu * %llu",
                           t->name, (unsigned long long)t->nbytes,
                           (unsigned long long)t->count, (unsigned long long)itemsize);
        else if (t->offset > size || t->nbytes > size - t->offset)
            rc = rsv__fail(err, errlen, "section '%s': bytes [%llu, %llu) run past the end of "
                           "the snapshot (%llu bytes)", t->name, (unsigned long long)t->offset,
                           (unsigned long long)(t->offset + t->nbytes),
                           (unsigned long long)size);
    }
    /* Sorted by name, the table finds a section in O(log count) and a name twice side by side. */
    if (rc == RSV_OK) qsort(table, section_count, sizeof *table, rsv__by_name);
    for (uint32_t i = 1; i < section_count && rc == RSV_OK; i++)
        if (strcmp(table[i - 1].name, table[i].name) == 0)
            rc = rsv__fail(err, errlen, "section '%s' appears twice", table[i].name);
    if (rc == RSV_OK) rc = rsv__load(snap, table, section_count, err, errlen);
    free(table);
    if (rc == RSV_OK && (snap->flags & RSV_VERIFY)) {
        uint64_t actual = XXH3_64bits(base + header_size, (size_t)(size - header_size));
        if (actual != snap->payload_checksum)
            rc = rsv__fail(err, errlen, "payload checksum mismatch: header says 0x%016llx, "
                           "payload hashes to 0x%016llx",
                           (unsigned long long)snap->payload_checksum,
                           (unsigned long long)actual);
    }
    return rc;
}

RSV__INLINE int rsv__errno_status(int error) {
    return error == ENOENT ? RSV_ENOENT : RSV_EIO;
}

/* Whether `uid` is one of the users named in $RESOLVERD_OWNER (names or uids, commas). */
RSV__INLINE int rsv__named_owner(uid_t uid) {
    const char *list = getenv("RESOLVERD_OWNER");
    if (list == NULL) return 0;
    while (*list) {
        char name[256];
        size_t len = strcspn(list, ",");
        if (len > 0 && len < sizeof name) {
            memcpy(name, list, len);
            name[len] = 0;
            char *end;
            unsigned long number = strtoul(name, &end, 10);
            if (*end == 0 && end != name) {
                if ((uid_t)number == uid) return 1;
            } else {
                const struct passwd *user = getpwnam(name);
                if (user != NULL && user->pw_uid == uid) return 1;
            }
        }
        list += len + (list[len] == ',');
    }
    return 0;
}

/* Rule 7 for the file `st` at `path`; `owner` (or (uid_t)-1) is the one user that may own it. */
RSV__INLINE int rsv__check_trust(const char *path, const struct stat *st, uid_t owner, char *err,
                                 size_t errlen) {
    if (!S_ISREG(st->st_mode)) return rsv__fail(err, errlen, "%s: not a regular file", path);
    if (owner != (uid_t)-1 && st->st_uid != owner) {
        rsv__fail(err, errlen, "%s: owned by uid %lu, not by uid %lu who owns the control "
                  "segment: refusing a file someone else planted", path,
                  (unsigned long)st->st_uid, (unsigned long)owner);
        return RSV_EUNTRUSTED;
    }
    int trusted = st->st_uid == geteuid() || st->st_uid == 0 || rsv__named_owner(st->st_uid);
    if (!trusted) {
        /* The directory's owner, if no one else may write the directory. */
        char directory[4096];
        const char *slash = strrchr(path, '/');
        size_t len = slash == NULL ? 0 : (size_t)(slash - path);
        struct stat dir;
        if (len < sizeof directory) {
            if (slash == NULL)
                strcpy(directory, ".");
            else if (len == 0)
                strcpy(directory, "/");
            else {
                memcpy(directory, path, len);
                directory[len] = 0;
            }
            trusted = stat(directory, &dir) == 0 && !(dir.st_mode & (S_IWGRP | S_IWOTH)) &&
                      dir.st_uid == st->st_uid;
        }
    }
    if (!trusted) {
        rsv__fail(err, errlen, "%s: owned by uid %lu, who is not trusted to publish snapshots "
                  "here (set $RESOLVERD_OWNER to trust the daemon's user)", path,
                  (unsigned long)st->st_uid);
        return RSV_EUNTRUSTED;
    }
    if (st->st_mode & (S_IWGRP | S_IWOTH)) {
        rsv__fail(err, errlen, "%s: mode %04o lets users other than its owner write it", path,
                  (unsigned)(st->st_mode & 07777));
        return RSV_EUNTRUSTED;
    }
    return RSV_OK;
}

/* Open `path` read-only for mapping: no symlink, rule 7 checked; the descriptor or a status. */
RSV__INLINE int rsv__open_trusted(const char *path, uid_t owner, struct stat *st, char *err,
                                  size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP) {
            rsv__fail(err, errlen, "%s: a symbolic link, not a snapshot file", path);
            return RSV_EUNTRUSTED;
        }
        rsv__fail(err, errlen, "%s: cannot open: %s", path, strerror(e));
        errno = e;
        return rsv__errno_status(e);
    }
    if (fstat(fd, st) != 0) {
        int e = errno;
        close(fd);
        rsv__fail(err, errlen, "%s: cannot stat: %s", path, strerror(e));
        errno = e;
        return RSV_EIO;
    }
    int rc = rsv__check_trust(path, st, owner, err, errlen);
    if (rc != RSV_OK) {
        close(fd);
        return rc;
    }
    return fd;
}

/* rsv_open, with `owner` the one user the file may belong to ((uid_t)-1: any trusted one). */
RSV__INLINE int rsv__open_owned(const char *path, unsigned flags, uid_t owner,
                                rsv_snapshot **out, char *err, size_t errlen) {
    *out = NULL;
    struct stat st;
    int fd = rsv__open_trusted(path, owner, &st, err, errlen);
    if (fd < 0) return fd;
    if (st.st_size == 0) {
        close(fd);
        return rsv__fail(err, errlen, "%s: truncated: the file is empty", path);
    }
    int mflags = MAP_SHARED;
#ifdef MAP_POPULATE
    if (flags & RSV_POPULATE) mflags |= MAP_POPULATE;
#endif
    void *base = mmap(NULL, (size_t)st.st_size, PROT_READ, mflags, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file */
    if (base == MAP_FAILED) {
        rsv__fail(err, errlen, "%s: cannot map: %s", path, strerror(e));
        errno = e;
        return RSV_EIO;
    }
    rsv_snapshot *snap = (rsv_snapshot *)calloc(1, sizeof(rsv_snapshot));
    if (snap == NULL) {
        munmap(base, (size_t)st.st_size);
        rsv__fail(err, errlen, "out of memory");
        return RSV_ENOMEM;
    }
    snap->base = (const unsigned char *)base;
    snap->size = (size_t)st.st_size;
    snap->mapped = 1;
    snap->flags = flags;
    char detail[RSV_ERROR_SIZE] = "";
    int rc = rsv__view(snap, detail, sizeof detail);
    if (rc != RSV_OK) {
        rsv_close(snap);
        if (err != NULL && errlen > 0) snprintf(err, errlen, "%s: %s", path, detail);
        return rc;
    }
    *out = snap;
    return RSV_OK;
}

/* Map a whole file read-only and validate it. On success *out owns the mapping (rsv_close);
 * on failure *out is NULL and `err` says what is wrong with the file, prefixed by its path.
 * RSV_EUNTRUSTED for a file rule 7 refuses. */
RSV__INLINE int rsv_open(const char *path, unsigned flags, rsv_snapshot **out, char *err,
                         size_t errlen) {
    return rsv__open_owned(path, flags, (uid_t)-1, out, err, errlen);
}

/* -- following a named registry -------------------------------------------------------------- */

/* Read the control segment with the seqlock protocol (shm_layout.read_control). */
#define RSV__SPINS 8 /* odd `sequence` reads before a reader starts yielding the CPU */

RSV__INLINE int rsv_read_control(const unsigned char *control, rsv_control *out, int retries,
                                 char *err, size_t errlen) {
    /* The magic and version are written once, before the file is published. */
    if (memcmp(control, RSV_CONTROL_MAGIC, 8) != 0)
        return rsv__fail(err, errlen, "bad control magic: not a resolverd control segment");
    const uint64_t *words = (const uint64_t *)control;
    for (int attempt = 0; attempt < retries; attempt++) {
        uint64_t before = __atomic_load_n(&words[2], __ATOMIC_ACQUIRE);
        if (before & 1) { /* the publisher is writing */
            /* A writer preempted mid-write needs a CPU, and spinning readers may hold it. */
            if (attempt >= RSV__SPINS) sched_yield();
            continue;
        }
        uint64_t copy[16];
        for (int i = 0; i < 16; i++) copy[i] = __atomic_load_n(&words[i], __ATOMIC_RELAXED);
        /* Orders the copy's loads before the second load of `sequence`. */
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        uint64_t after = __atomic_load_n(&words[2], __ATOMIC_RELAXED);
        if (before != after) continue;
        const unsigned char *raw = (const unsigned char *)copy;
        if (rsv__u16(raw + 8) != RSV_CONTROL_VERSION)
            return rsv__fail(err, errlen, "control segment version %u is not supported",
                             (unsigned)rsv__u16(raw + 8));
        out->sequence = before;
        out->generation = copy[3];
        out->payload_checksum = copy[4];
        out->updated_ns = (int64_t)copy[5];
        out->publisher_pid = copy[6];
        if (!rsv__ascii(raw + 64, 64, out->snapshot))
            return rsv__fail(err, errlen, "control segment field snapshot is not ASCII");
        return RSV_OK;
    }
    return rsv__fail(err, errlen, "control segment never became stable (publisher died "
                     "mid-swap?)");
}

/* A registry name as the Python client accepts one: [A-Za-z0-9_][A-Za-z0-9_.-]{0,63}. */
RSV__INLINE int rsv__registry_name(const char *name) {
    size_t len = strlen(name);
    if (len == 0 || len > 64) return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '_' || (i > 0 && (c == '.' || c == '-'));
        if (!ok) return 0;
    }
    return 1;
}

/* Map the generation `state` names and check that it is that generation. */
RSV__INLINE int rsv__open_generation(const rsv_follower *f, const rsv_control *state,
                                     rsv_snapshot **out, char *err, size_t errlen) {
    if (state->snapshot[0] == 0 || strchr(state->snapshot, '/') != NULL)
        return rsv__fail(err, errlen, "control segment field snapshot '%s' is not a file name",
                         state->snapshot);
    size_t len = strlen(f->directory) + 1 + strlen(state->snapshot) + 1;
    char *path = (char *)malloc(len);
    if (path == NULL) return RSV_ENOMEM;
    snprintf(path, len, "%s/%s", f->directory, state->snapshot);
    int rc = rsv__open_owned(path, f->flags, f->owner, out, err, errlen);
    free(path);
    if (rc == RSV_OK && (*out)->generation != state->generation) {
        rsv__fail(err, errlen, "%s: generation %llu in the snapshot, %llu in the control segment",
                  state->snapshot, (unsigned long long)(*out)->generation,
                  (unsigned long long)state->generation);
        rsv_close(*out);
        *out = NULL;
        return RSV_ELAYOUT;
    }
    return rc;
}

RSV__INLINE void rsv_follow_close(rsv_follower *f) {
    if (f == NULL) return;
    if (f->control != NULL) munmap((void *)f->control, RSV_CONTROL_SIZE);
    rsv_close(f->current);
    rsv_close(f->previous);
    free(f->directory);
    free(f->name);
    free(f);
}

/* Map the control segment of registry `name` in `directory` read-only, if rsv__open_trusted
 * accepts its file; `*owner` is the file's owner. RSV_ENOENT when there is none. */
RSV__INLINE int rsv__map_control(const char *directory, const char *name,
                                 const unsigned char **out, uid_t *owner, struct stat *file,
                                 char *err, size_t errlen) {
    *out = NULL;
    size_t len = strlen(directory) + strlen(name) + 32;
    char *path = (char *)malloc(len);
    if (path == NULL) return RSV_ENOMEM;
    snprintf(path, len, "%s/resolverd.%s.ctl", directory, name);
    struct stat st;
    int rc = RSV_OK;
    int fd = rsv__open_trusted(path, (uid_t)-1, &st, err, errlen);
    if (fd < 0) {
        rc = fd;
    } else if (st.st_size < RSV_CONTROL_SIZE) {
        rc = rsv__fail(err, errlen, "%s: not a control segment (size)", path);
    } else {
        void *control = mmap(NULL, RSV_CONTROL_SIZE, PROT_READ, MAP_SHARED, fd, 0);
        if (control == MAP_FAILED) {
            rc = RSV_EIO;
            rsv__fail(err, errlen, "%s: cannot map: %s", path, strerror(errno));
        } else {
            *out = (const unsigned char *)control;
            *owner = st.st_uid;
            *file = st;
        }
    }
    if (fd >= 0) close(fd);
    free(path);
    return rc;
}

/* Follow registry `name` published in `directory` (see shm_layout: the control segment
 * resolverd.NAME.ctl names the current generation's file). RSV_EUNAVAILABLE when no
 * generation is published; `flags` apply to every generation mapped. */
RSV__INLINE int rsv_follow_open(const char *directory, const char *name, unsigned flags,
                                rsv_follower **out, char *err, size_t errlen) {
    *out = NULL;
    if (!rsv__registry_name(name)) {
        rsv__fail(err, errlen, "%s is not a registry name", name);
        return RSV_EINVAL;
    }
    rsv_follower *f = (rsv_follower *)calloc(1, sizeof(rsv_follower));
    size_t len = strlen(directory) + strlen(name) + 32;
    char *path = (char *)malloc(len);
    if (f == NULL || path == NULL) {
        free(f);
        free(path);
        return RSV_ENOMEM;
    }
    f->flags = flags;
    f->retry_ns = RSV_FOLLOW_RETRY_NS;
    f->directory = rsv__strdup(directory);
    f->name = rsv__strdup(name);
    snprintf(path, len, "%s/resolverd.%s.ctl", directory, name);
    struct stat file;
    int rc = f->directory == NULL || f->name == NULL
                 ? RSV_ENOMEM
                 : rsv__map_control(directory, name, &f->control, &f->owner, &file, err, errlen);
    if (rc == RSV_OK) {
        f->control_dev = file.st_dev;
        f->control_ino = file.st_ino;
    }
    if (rc == RSV_ENOENT) {
        rc = RSV_EUNAVAILABLE;
        rsv__fail(err, errlen, "registry '%s' is not published in %s (%s: %s)", name, directory,
                  path, strerror(ENOENT));
    }
    for (int attempt = 0; rc == RSV_OK; attempt++) {
        rsv_control state;
        char detail[RSV_ERROR_SIZE] = "";
        rc = rsv_read_control(f->control, &state, 10000, detail, sizeof detail);
        if (rc != RSV_OK) {
            if (err && errlen) snprintf(err, errlen, "%s: %s", path, detail);
            break;
        }
        if (state.generation == 0) {
            rc = RSV_EUNAVAILABLE;
            rsv__fail(err, errlen, "registry '%s': no generation published yet", name);
            break;
        }
        rc = rsv__open_generation(f, &state, &f->current, err, errlen);
        if (rc == RSV_ENOENT && attempt < 5) {
            rc = RSV_OK; /* swapped and unlinked between the two reads: read the control again */
            continue;
        }
        if (rc == RSV_ENOENT) {
            rc = RSV_EUNAVAILABLE;
            rsv__fail(err, errlen, "registry '%s': its generation kept changing while opening",
                      name);
        }
        if (rc == RSV_OK) f->sequence = state.sequence;
        break;
    }
    free(path);
    if (rc != RSV_OK) {
        rsv_follow_close(f);
        return rc;
    }
    *out = f;
    return RSV_OK;
}

/* Make `fresh` the current generation. */
RSV__INLINE int rsv__follow_switch(rsv_follower *f, rsv_snapshot *fresh) {
    rsv_close(f->previous);
    f->previous = f->current;
    f->current = fresh;
    f->swaps++;
    return 1;
}

#define RSV__NEVER UINT64_MAX /* a sequence no control segment holds */
#define RSV__AGAIN 2           /* rsv__follow_renew: look at the name again at once */
#define RSV__ORPHANED 3        /* rsv__follow_renew: nothing to follow there yet */
#define RSV__IN_PLACE 4        /* rsv__follow_renew: the followed file itself, no generation */

/* Whether `state` names the follower's current generation. The checksum too: a registry
 * purged and served again numbers its generations from 1 again. */
RSV__INLINE int rsv__is_current(const rsv_follower *f, const rsv_control *state) {
    return state->generation == f->current->generation &&
           state->payload_checksum == f->current->payload_checksum;
}

RSV__INLINE uint64_t rsv__monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

/* No successor to follow yet: keep the current generation, send every check down the slow
 * path (no control segment holds RSV__NEVER) and look at the name again after retry_ns. The
 * retired segment's sequence never moves again: waiting for it would strand the follower. */
RSV__INLINE int rsv__follow_orphaned(rsv_follower *f) {
    f->sequence = RSV__NEVER;
    f->retry_at_ns = rsv__monotonic_ns() + f->retry_ns;
    return 0;
}

/* One look at the control segment now at the follower's name: 1 if it switched to the
 * generation that one names, 0 if it follows that file on the same generation, RSV__AGAIN to
 * look again at once, RSV__ORPHANED if there is nothing to follow there yet, RSV__IN_PLACE if
 * the file there is the one followed (set to no generation in place, not retired). */
RSV__INLINE int rsv__follow_renew(rsv_follower *f) {
    const unsigned char *control = NULL;
    rsv_follower probe = *f; /* f with the new file's owner, for the generation's check */
    struct stat file;
    int rc = rsv__map_control(f->directory, f->name, &control, &probe.owner, &file,
                              f->last_error, sizeof f->last_error);
    if (rc == RSV_ENOENT) return RSV__ORPHANED; /* purged, and not served again yet */
    if (rc != RSV_OK) {
        f->failed_refreshes++;
        return RSV__ORPHANED;
    }
    if (file.st_dev == f->control_dev && file.st_ino == f->control_ino) {
        /* Not retired: the very file, set to no generation in place (a daemon that found
         * nothing to adopt). Its sequence moves when it names one. */
        munmap((void *)control, RSV_CONTROL_SIZE);
        return RSV__IN_PLACE;
    }
    rsv_control state;
    rsv_snapshot *fresh = NULL;
    rc = rsv_read_control(control, &state, 100, f->last_error, sizeof f->last_error);
    if (rc == RSV_OK && state.generation != 0)
        rc = rsv__open_generation(&probe, &state, &fresh, f->last_error, sizeof f->last_error);
    if (rc != RSV_OK || fresh == NULL) {
        munmap((void *)control, RSV_CONTROL_SIZE);
        if (rc == RSV_ENOENT) return RSV__AGAIN; /* swapped and unlinked between the reads */
        if (rc != RSV_OK) f->failed_refreshes++;
        return RSV__ORPHANED;
    }
    munmap((void *)f->control, RSV_CONTROL_SIZE);
    f->control = control;
    f->owner = probe.owner;
    f->control_dev = file.st_dev;
    f->control_ino = file.st_ino;
    f->sequence = state.sequence;
    f->retry_at_ns = 0;
    if (rsv__is_current(f, &state)) {
        rsv_close(fresh); /* the same generation, named by a renewed control segment */
        return 0;
    }
    return rsv__follow_switch(f, fresh);
}

/* The followed control segment was retired (generation 0: see shm_layout): follow the one now
 * at its name if it names a generation, and switch to that generation (1); else 0. */
RSV__INLINE int rsv__follow_renewed(rsv_follower *f) {
    for (int attempt = 0; attempt < 5; attempt++) {
        int rc = rsv__follow_renew(f);
        if (rc == RSV__IN_PLACE) {
            f->retry_at_ns = 0; /* f->sequence is the one just read from it */
            return 0;
        }
        if (rc == RSV__ORPHANED) break;
        if (rc != RSV__AGAIN) return rc;
    }
    return rsv__follow_orphaned(f);
}

/* The slow path of rsv_follow_check: read the control segment and switch if a new generation
 * is current. A failure (file gone, bad file, a control segment left odd) keeps the current
 * generation, counts in failed_refreshes, leaves its message in last_error, and is not
 * retried until `sequence` moves again; a retired segment with no successor yet is looked
 * at again every retry_ns. */
RSV__INLINE int rsv__follow_refresh(rsv_follower *f, uint64_t seen) {
    if (f->retry_at_ns != 0 && rsv__monotonic_ns() < f->retry_at_ns) return 0;
    rsv_control state;
    if (rsv_read_control(f->control, &state, 100, f->last_error, sizeof f->last_error) != RSV_OK) {
        f->failed_refreshes++;
        f->sequence = seen;
        return 0;
    }
    f->sequence = state.sequence;
    if (state.generation == 0) return rsv__follow_renewed(f);
    if (rsv__is_current(f, &state)) return 0; /* repaired or adopted */
    rsv_snapshot *fresh = NULL;
    if (rsv__open_generation(f, &state, &fresh, f->last_error, sizeof f->last_error) != RSV_OK) {
        f->failed_refreshes++;
        return 0;
    }
    return rsv__follow_switch(f, fresh);
}

/* 1 if the registry moved to a new generation and the follower switched to it, else 0.
 * Cheap: one acquire load of the control segment's `sequence`, compared with the last value
 * read stable; call it before each lookup or batch of lookups. */
RSV__INLINE int rsv_follow_check(rsv_follower *f) {
    uint64_t seen = __atomic_load_n((const uint64_t *)(f->control + RSV_CONTROL_SEQUENCE_OFFSET),
                                    __ATOMIC_ACQUIRE);
    if (RSV__LIKELY(seen == f->sequence)) return 0;
    return rsv__follow_refresh(f, seen);
}

/* The generation to resolve from: valid until the second switch after this call, or the
 * first after rsv_follow_release_previous (rule 6 at the top of this header). */
RSV__INLINE const rsv_snapshot *rsv_follow_snapshot(const rsv_follower *f) {
    return f->current;
}

/* Unmap the generation the last switch replaced, once no pointer into it is in use. */
RSV__INLINE void rsv_follow_release_previous(rsv_follower *f) {
    rsv_close(f->previous);
    f->previous = NULL;
}

/* A status as text, for messages. */
RSV__INLINE const char *rsv_status_name(int status) {
    switch (status) {
    case RSV_OK: return "RSV_OK";
    case RSV_MISS: return "RSV_MISS";
    case RSV_ENAME: return "RSV_ENAME";
    case RSV_EKIND: return "RSV_EKIND";
    case RSV_EIO: return "RSV_EIO";
    case RSV_ENOENT: return "RSV_ENOENT";
    case RSV_ELAYOUT: return "RSV_ELAYOUT";
    case RSV_EUNAVAILABLE: return "RSV_EUNAVAILABLE";
    case RSV_EINVAL: return "RSV_EINVAL";
    case RSV_ENOMEM: return "RSV_ENOMEM";
    case RSV_EUNTRUSTED: return "RSV_EUNTRUSTED";
    default: return "RSV_E?";
    }
}

#ifdef __cplusplus
}
#endif

#endif /* RESOLVERD_H */
