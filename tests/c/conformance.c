/* Answers lookups through include/resolverd.h, one query per line, for
 * tests/integration/test_c_reader.py to compare with the Python client.
 *
 *   conformance [--verify] [--strict] SNAPSHOT < queries
 *
 * Prints "open RSV_OK GENERATION N" and then one answer per query; if the snapshot does not
 * open, prints "open STATUS MESSAGE" and exits 3. Strings travel in hex behind an "x", so
 * that empty, non-ASCII and space-holding keys and tokens need no quoting:
 *
 *   T BROKER xHEXKEY          ->  DECIMAL | sxHEXTOKEN | - | STATUS
 *   K FEED i DECIMAL          ->  xHEXKEY | - | STATUS
 *   K FEED s xHEXTOKEN        ->  xHEXKEY | - | STATUS
 *   O xHEXKEY / S xHEXKEY     ->  the fingerprint / strict ordinal, -1 for none
 */
#define _POSIX_C_SOURCE 200809L
#include "resolverd.h"

#include <inttypes.h>

static size_t unhex(const char *text, char *out) {
    size_t n = 0;
    if (*text++ != 'x') return 0;
    for (; text[0] && text[1]; text += 2) {
        unsigned value;
        sscanf(text, "%2x", &value);
        out[n++] = (char)value;
    }
    return n;
}

static void put_hex(const char *prefix, const char *bytes, size_t len) {
    fputs(prefix, stdout);
    putchar('x');
    for (size_t i = 0; i < len; i++) printf("%02x", (unsigned char)bytes[i]);
    putchar('\n');
}

static void put_status(int status) {
    if (status == RSV_MISS)
        puts("-");
    else
        puts(rsv_status_name(status));
}

int main(int argc, char **argv) {
    unsigned flags = 0;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--verify") == 0)
            flags |= RSV_VERIFY;
        else if (strcmp(argv[i], "--strict") == 0)
            flags |= RSV_STRICT;
        else
            path = argv[i];
    }
    if (path == NULL) {
        fputs("usage: conformance [--verify] [--strict] SNAPSHOT < queries\n", stderr);
        return 2;
    }
    char err[RSV_ERROR_SIZE];
    rsv_snapshot *snap;
    int rc = rsv_open(path, flags, &snap, err, sizeof err);
    if (rc != RSV_OK) {
        printf("open %s %s\n", rsv_status_name(rc), err);
        return 3;
    }
    printf("open RSV_OK %" PRIu64 " %" PRIu64 "\n", snap->generation, snap->n);

    static char line[1 << 16], text[1 << 15];
    char kind, name[64], arg[1 << 16], value[1 << 16];
    while (fgets(line, sizeof line, stdin)) {
        kind = line[0];
        if (kind == 'T' && sscanf(line, "T %63s %65535s", name, arg) == 2) {
            size_t len = unhex(arg, text);
            int broker = rsv_broker_index(snap, name);
            uint64_t token;
            const char *stoken;
            size_t stoken_len;
            if (broker >= 0 && snap->brokers[broker].kind == RSV_KIND_STR) {
                rc = rsv_token_str(snap, text, len, broker, &stoken, &stoken_len);
                if (rc == RSV_OK) put_hex("s", stoken, stoken_len);
                else put_status(rc);
            } else {
                rc = rsv_token(snap, text, len, broker, &token);
                if (rc == RSV_OK) printf("%" PRIu64 "\n", token);
                else put_status(rc);
            }
        } else if (kind == 'K' && sscanf(line, "K %63s %65535s %65535s", name, arg, value) == 3) {
            int feed = rsv_feed_index(snap, name);
            const char *key;
            size_t key_len;
            if (arg[0] == 'i') {
                uint64_t token = strtoull(value, NULL, 10);
                rc = rsv_key(snap, feed, token, &key, &key_len);
            } else {
                size_t len = unhex(value, text);
                rc = rsv_key_str(snap, feed, text, len, &key, &key_len);
            }
            if (rc == RSV_OK) put_hex("", key, key_len);
            else put_status(rc);
        } else if ((kind == 'O' || kind == 'S') && sscanf(line + 1, " %65535s", arg) == 1) {
            size_t len = unhex(arg, text);
            int64_t ordinal = kind == 'O' ? rsv_ordinal(snap, text, len)
                                          : rsv_ordinal_strict(snap, text, len);
            printf("%" PRId64 "\n", ordinal);
        } else {
            printf("bad query\n");
        }
    }
    rsv_close(snap);
    return 0;
}
