/* hello: the smallest WASI job in C. Prints a line to stdout (the execution's output)
 * naming its arguments, and one to stderr (its logs). */
#include <stdio.h>

int main(int argc, char **argv) {
    fprintf(stderr, "hello job in C running with %d argument(s)\n", argc - 1);
    printf("hello from C");
    for (int i = 1; i < argc; i++) {
        printf(" %s", argv[i]);
    }
    printf("\n");
    return 0;
}
