/* Follows a registry through include/resolverd.h, for tests/integration/test_c_reader.py.
 *
 *   follow DIRECTORY NAME KEY BROKER
 *
 * Opens the registry and prints "generation G token T" for KEY's token of int broker BROKER
 * (T is "-" for a miss); then, for each line read from stdin, calls rsv_follow_check and
 * prints "switched S generation G token T". Exits 3 with "open STATUS MESSAGE" if the
 * registry cannot be followed. $FOLLOW_RETRY_NS, if set, replaces the follower's retry_ns.
 */
#define _POSIX_C_SOURCE 200809L
#include "resolverd.h"

#include <inttypes.h>

static void report(const rsv_snapshot *snap, const char *key, const char *broker) {
    uint64_t token;
    /* Indexes belong to one generation: look the broker up in the current one. */
    int rc = rsv_token(snap, key, strlen(key), rsv_broker_index(snap, broker), &token);
    printf("generation %" PRIu64 " token ", snap->generation);
    if (rc == RSV_OK)
        printf("%" PRIu64 "\n", token);
    else
        printf("%s\n", rc == RSV_MISS ? "-" : rsv_status_name(rc));
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fputs("usage: follow DIRECTORY NAME KEY BROKER\n", stderr);
        return 2;
    }
    char err[RSV_ERROR_SIZE];
    rsv_follower *f;
    int rc = rsv_follow_open(argv[1], argv[2], 0, &f, err, sizeof err);
    if (rc != RSV_OK) {
        printf("open %s %s\n", rsv_status_name(rc), err);
        return 3;
    }
    const char *retry = getenv("FOLLOW_RETRY_NS");
    if (retry) f->retry_ns = strtoull(retry, NULL, 10);
    report(rsv_follow_snapshot(f), argv[3], argv[4]);
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        int switched = rsv_follow_check(f);
        printf("switched %d ", switched);
        report(rsv_follow_snapshot(f), argv[3], argv[4]);
        if (switched) rsv_follow_release_previous(f);
    }
    rsv_follow_close(f);
    return 0;
}
