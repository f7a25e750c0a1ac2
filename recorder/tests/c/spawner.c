/* Starts `cat` on four files in four ways (posix_spawnp, vfork+execv, fork+execlp, system):
 * every child must be observed, whichever way it was started. */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int wait_ok(pid_t pid) {
    int st;
    return waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

int main(int argc, char **argv) {
    if (argc != 6) return 2;
    const char *cat = argv[1];
    pid_t pid;
    char *a1[] = {"cat", argv[2], NULL};
    if (posix_spawnp(&pid, "cat", NULL, NULL, a1, environ) != 0 || !wait_ok(pid)) return 3;

    char *a2[] = {"cat", argv[3], NULL};
    pid = vfork();
    if (pid == 0) {
        execv(cat, a2);
        _exit(127);
    }
    if (!wait_ok(pid)) return 4;

    pid = fork();
    if (pid == 0) {
        execlp("cat", "cat", argv[4], (char *)NULL);
        _exit(127);
    }
    if (!wait_ok(pid)) return 5;

    char cmd[4200];
    snprintf(cmd, sizeof cmd, "cat '%s'", argv[5]);
    if (system(cmd) != 0) return 6;
    return 0;
}
