/* hello: the smallest WASI job in C. Prints a line to stdout (the execution's output)
 * naming its arguments, and one to stderr (its logs).
 *
 * fputs rather than printf: printf's formatting machinery would double the module
 * (28 KB instead of 14), and a microcontroller takes modules up to 16 KiB. */
#include <stdio.h>

int main(int argc, char **argv) {
    fputs("hello job in C running with ", stderr);
    /* argc - 1 in decimal, without printf. */
    char digits[12];
    int n = argc - 1, at = sizeof digits;
    digits[--at] = '\0';
    do {
        digits[--at] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    fputs(digits + at, stderr);
    fputs(" argument(s)\n", stderr);

    fputs("hello from C", stdout);
    for (int i = 1; i < argc; i++) {
        fputc(' ', stdout);
        fputs(argv[i], stdout);
    }
    fputc('\n', stdout);
    return 0;
}
