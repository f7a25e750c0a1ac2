/* Many threads opening files at once: the recorder must log every open as one whole record.
 * Also checks that a failed open still reports ENOENT through errno (the hooks keep errno). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define THREADS 16
static const char *dir;
static int per_thread;
static int failures;

static void *work(void *arg) {
    long t = (long)arg;
    char path[4096];
    for (int i = 0; i < per_thread; i++) {
        snprintf(path, sizeof path, "%s/t%02ld-%04d-%s.txt", dir, t, i,
                 "a-long-name-so-that-records-are-large-enough-to-tear-if-writes-were-split-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        int fd = open(path, O_RDONLY);
        if (fd < 0) __sync_fetch_and_add(&failures, 1);
        else close(fd);
        if (getenv("KR_THREAD_VAR") == NULL) __sync_fetch_and_add(&failures, 1);
    }
    snprintf(path, sizeof path, "%s/missing-%ld", dir, t);
    errno = 0;
    if (open(path, O_RDONLY) >= 0 || errno != ENOENT) __sync_fetch_and_add(&failures, 1);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    dir = argv[1];
    per_thread = atoi(argv[2]);
    pthread_t th[THREADS];
    for (long t = 0; t < THREADS; t++) pthread_create(&th[t], NULL, work, (void *)t);
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    return 0;
}
