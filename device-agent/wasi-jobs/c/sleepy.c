/* sleepy: waits a second with sleep(), then says so. wasi-libc implements sleep with
 * WASI's `poll_oneoff`, which the fleet does not offer (a device runs one job at a time
 * and a job has nothing to wait for but its own work), so every device refuses this
 * module before it runs, naming the call. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
    sleep(1);
    fputs("slept\n", stdout);
    return 0;
}
