/* A tiny program, linked statically by the test: the recorder cannot load into it. */
#include <stdio.h>
int main(int argc, char **argv) {
    if (argc > 1) {
        FILE *f = fopen(argv[1], "r");
        if (f) fclose(f);
    }
    puts("static hello");
    return 0;
}
