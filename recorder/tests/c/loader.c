/* Loads a library by bare name: the dynamic loader searches the *calling* object's RUNPATH,
 * so the recorder's dlopen hook must not become the caller. */
#include <dlfcn.h>
#include <stdio.h>

int main(void) {
    void *h = dlopen("libkrplugin.so", RTLD_NOW);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    int (*answer)(void) = (int (*)(void))dlsym(h, "plugin_answer");
    if (!answer) return 2;
    printf("%d\n", answer());
    return 0;
}
