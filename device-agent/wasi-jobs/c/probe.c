/* probe: a hostile or curious C job, by its first argument.
 *   escape  tries to open files outside its inputs (/etc/passwd, ../, an absolute path
 *           under /inputs that climbs out) and to write one; prints what each got
 *   loop    spins forever
 *   bomb    allocates until malloc fails, then writes to what it got
 *   exit N  exits with code N
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void try_open(const char *path, const char *mode) {
    FILE *f = fopen(path, mode);
    printf("%s %s: %s\n", mode, path, f ? "OPENED" : strerror(errno));
    if (f) fclose(f);
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    if (strcmp(what, "escape") == 0) {
        try_open("/etc/passwd", "r");
        try_open("/inputs/../etc/passwd", "r");
        try_open("../readings", "r");
        try_open("/inputs/readings", "w");
        try_open("/inputs/new-file", "w");
        try_open("/inputs/readings", "r");
        return 0;
    }
    if (strcmp(what, "loop") == 0) {
        volatile unsigned long n = 0;
        for (;;) n++;
    }
    if (strcmp(what, "bomb") == 0) {
        /* Every chunk is written and read back through a volatile, so the compiler
         * cannot drop the allocations. */
        static char *volatile last;
        volatile unsigned long touched = 0;
        size_t total = 0;
        for (;;) {
            char *p = malloc(64 * 1024);
            if (!p) break;
            memset(p, 1, 64 * 1024);
            last = p;
            touched += (unsigned char)last[64 * 1024 - 1];
            total += 64 * 1024;
        }
        fprintf(stderr, "malloc refused after %zu bytes (%lu touched)\n", total, (unsigned long)touched);
        return 9;
    }
    if (strcmp(what, "exit") == 0 && argc > 2) {
        exit(atoi(argv[2]));
    }
    fprintf(stderr, "usage: probe escape|loop|bomb|exit N\n");
    return 1;
}
