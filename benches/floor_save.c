// The floor of a registry save, for benches/cli.sh: read ports.json, write it to a temp file,
// start its writeback and write the same bytes to the backup's temp file meanwhile (no fsync),
// fsync, rename over ports.json, fsync the directory, then put the backup in place by an
// exchange of names and unlink the old one, as the tool's save does; no parsing, no rules.
// Usage: floor_save <registry dir> [<new worktree path>]. With a path, first what `add` must
// also do: `git worktree add -q --detach <path>` (run from the current directory, waited for),
// then a 17-byte identity token written into the new worktree's git dir and fsynced. Run as a
// git plugin (git-floor-save on PATH) it is the floor of any durable allocation through git.
// Exits 1 on any error.
#define _GNU_SOURCE // renameat2, sync_file_range (Linux)
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
static int add_worktree(const char *dir, char *path) {
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
        execlp("git", "git", "worktree", "add", "-q", "--detach", path, (char *)NULL);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
    // <common dir>/worktrees/<name>: the registry dir is <common dir>/worktree-registry.
    char id[4096];
    snprintf(id, sizeof id, "%s/../worktrees/%s/floor-id", dir, basename(path));
    int fd = open(id, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, "18ede71cc5f2a7ef\n", 17) != 17 || fsync(fd) != 0 || close(fd) != 0) return 1;
    return 0;
}
int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) return 1;
    const char *dir = argv[1];
    if (argc == 3 && add_worktree(dir, argv[2]) != 0) return 1;
    char p[4096], t[4096], b[4096], bt[4096];
    snprintf(p, sizeof p, "%s/ports.json", dir);
    snprintf(t, sizeof t, "%s/.ports.json.tmp", dir);
    snprintf(b, sizeof b, "%s/ports.json.bak", dir);
    snprintf(bt, sizeof bt, "%s/.ports.json.bak.tmp", dir);
    int fd = open(p, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) return 1;
    char *buf = malloc(st.st_size);
    ssize_t n = 0; while (n < st.st_size) { ssize_t r = read(fd, buf + n, st.st_size - n); if (r <= 0) return 1; n += r; }
    close(fd);
    fd = open(t, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, buf, n) != n) return 1;
    sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    int bf = open(bt, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (bf < 0 || write(bf, buf, n) != n || close(bf) != 0) return 1;
    if (fsync(fd) != 0 || close(fd) != 0) return 1;
    if (rename(t, p) != 0) return 1;
    int d = open(dir, O_RDONLY);
    if (d < 0 || fsync(d) != 0) return 1;
    close(d);
    if (renameat2(AT_FDCWD, bt, AT_FDCWD, b, RENAME_EXCHANGE) != 0) return rename(bt, b) != 0;
    return unlink(bt) != 0;
}
