// The floor of a whole-file registry save, for benches/cli.sh: read ports.json, write it to a
// temp file, fsync, rename over ports.json, fsync the directory, then the same bytes to the
// backup by temp file and rename (no fsync), as the tool's save does; no parsing, no rules.
// Usage: floor_save <registry dir>. Exits 1 on any error.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    const char *dir = argv[1];
    char p[4096], t[4096], b[4096], bt[4096];
    snprintf(p, sizeof p, "%s/ports.json", dir);
    snprintf(t, sizeof t, "%s/.ports.json.tmp", dir);
    snprintf(b, sizeof b, "%s/ports.json.bak", dir);
    snprintf(bt, sizeof bt, "%s/.ports.json.bak.tmp", dir);
    int fd = open(p, O_RDONLY);
    struct stat st;
    if (argc != 2 || fd < 0 || fstat(fd, &st) != 0) return 1;
    char *buf = malloc(st.st_size);
    ssize_t n = 0; while (n < st.st_size) { ssize_t r = read(fd, buf + n, st.st_size - n); if (r <= 0) return 1; n += r; }
    close(fd);
    fd = open(t, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, buf, n) != n || fsync(fd) != 0 || close(fd) != 0) return 1;
    if (rename(t, p) != 0) return 1;
    int d = open(dir, O_RDONLY);
    if (d < 0 || fsync(d) != 0) return 1;
    close(d);
    fd = open(bt, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, buf, n) != n || close(fd) != 0) return 1;
    return rename(bt, b) != 0;
}
