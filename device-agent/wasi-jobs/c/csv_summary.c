/* csv-summary in C: the same job as the Rust example (device-agent/jobs/guest/csv-summary),
 * as a plain program. Reads the data input `readings` (CSV lines `timestamp,value`) from
 * /inputs/readings and prints `count=N min=X max=Y mean=Z skipped=S`. Blank lines and
 * `#` comments are ignored; lines whose value is not a number (a header, say) or that are
 * longer than 128 bytes are skipped. Exit codes: 2 = input `readings` not available,
 * 3 = read error. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINE 128

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1])) *--end = '\0';
    return s;
}

int main(void) {
    FILE *input = fopen("/inputs/readings", "r");
    if (!input) {
        fprintf(stderr, "data input `readings` is not available\n");
        return 2;
    }
    unsigned long long count = 0, skipped = 0;
    double min = 0, max = 0, sum = 0;
    char line[MAX_LINE + 2];
    while (fgets(line, sizeof line, input)) {
        size_t len = strlen(line);
        if (len > 0 && line[len - 1] != '\n' && !feof(input)) {
            /* Longer than a line may be: skip the rest of it. */
            int c;
            while ((c = fgetc(input)) != EOF && c != '\n') {}
            skipped++;
            continue;
        }
        char *text = trim(line);
        if (*text == '\0' || *text == '#') continue;
        char *comma = strchr(text, ',');
        char *end = NULL;
        double v = comma ? strtod(trim(comma + 1), &end) : NAN;
        if (!comma || end == NULL || *end != '\0' || !isfinite(v)) {
            skipped++;
            continue;
        }
        if (count == 0) {
            min = v;
            max = v;
        } else {
            min = v < min ? v : min;
            max = v > max ? v : max;
        }
        count++;
        sum += v;
    }
    if (ferror(input)) return 3;
    fclose(input);
    fprintf(stderr, "read %llu readings, skipped %llu lines\n", count, skipped);
    if (count == 0) {
        printf("count=0 skipped=%llu", skipped);
    } else {
        printf("count=%llu min=%g max=%g mean=%.3f skipped=%llu", count, min, max, sum / count, skipped);
    }
    return 0;
}
