/* probe: a hostile or curious C job, by its first argument.
 *   escape  tries to open files outside its inputs (/etc/passwd, ../, an absolute path
 *           under /inputs that climbs out) and to write one; prints what each got
 *   loop    spins forever
 *   bomb    allocates until malloc fails, then writes to what it got
 *   exit N  exits with code N
 * Without printf (fputs and a small decimal writer), so that it stays under a
 * microcontroller's 16 KiB module limit and probes the boards too.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put_decimal(unsigned long long n, FILE *to) {
    char digits[24];
    int at = sizeof digits;
    digits[--at] = '\0';
    do {
        digits[--at] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    fputs(digits + at, to);
}

static void try_open(const char *path, const char *mode) {
    FILE *f = fopen(path, mode);
    fputs(mode, stdout);
    fputc(' ', stdout);
    fputs(path, stdout);
    fputs(": ", stdout);
    fputs(f ? "OPENED" : strerror(errno), stdout);
    fputc('\n', stdout);
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
        fputs("malloc refused after ", stderr);
        put_decimal(total, stderr);
        fputs(" bytes (", stderr);
        put_decimal(touched, stderr);
        fputs(" touched)\n", stderr);
        return 9;
    }
    if (strcmp(what, "exit") == 0 && argc > 2) {
        exit(atoi(argv[2]));
    }
    fputs("usage: probe escape|loop|bomb|exit N\n", stderr);
    return 1;
}
