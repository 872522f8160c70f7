/* clocks: which of WASI's clocks and randomness this device gives a job. Reads the
 * monotonic clock around some work (it must not go backwards), then asks for the wall
 * clock and for random bytes, and prints one line each:
 *
 *   monotonic: ok | unsupported | went backwards
 *   realtime: ok | unsupported
 *   random: ok | unsupported
 *
 * A gateway offers all three; a microcontroller its timer as the monotonic clock and
 * neither a wall clock nor randomness. fputs only, so it fits a board's module limit. */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static unsigned long long ns(const struct timespec *t) {
    return (unsigned long long)t->tv_sec * 1000000000ull + (unsigned long long)t->tv_nsec;
}

int main(void) {
    struct timespec before, after, wall;
    if (clock_gettime(CLOCK_MONOTONIC, &before) != 0) {
        fputs("monotonic: unsupported\n", stdout);
    } else {
        volatile unsigned sum = 0;
        for (unsigned i = 0; i < 100000; i++) sum += i;
        (void)sum;
        if (clock_gettime(CLOCK_MONOTONIC, &after) != 0 || ns(&after) < ns(&before)) {
            fputs("monotonic: went backwards\n", stdout);
        } else {
            fputs("monotonic: ok\n", stdout);
        }
    }
    fputs(clock_gettime(CLOCK_REALTIME, &wall) == 0 ? "realtime: ok\n" : "realtime: unsupported\n", stdout);
    unsigned char bytes[8];
    fputs(getentropy(bytes, sizeof bytes) == 0 ? "random: ok\n" : "random: unsupported\n", stdout);
    return 0;
}
