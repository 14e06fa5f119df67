/* umvu fast path: decide, without Python, that a trapped path or descriptor
 * call touches nothing virtual, so the kernel can run it as it is.
 *
 * The decision is conservative: whenever it is not sure (a mount point could
 * be crossed, the thread is unknown, its cwd or descriptors are virtual, the
 * path is odd) it answers "ask Python". Python keeps the tables here in step
 * with the view: mount points, and per thread its process id, flags and cwd.
 *
 * Below a plain bind mount (a host directory standing for the mount point,
 * nothing else to decide) the walk goes on in the host directory, and a call
 * that does not open a descriptor is rewritten to the host path here: the
 * path is written below the tracee's stack, the argument register pointed at
 * it, and put back at the call's exit stop. Below layers (a cow mount)
 * stat-like calls are walked too, by the layer protocol the mount comes
 * with (struct umvu_mount): the C core knows no module's on-disk format.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "core.h"
#include "fastpath.h"

#define TABLE_SIZE 8192             /* threads; power of two */
#define MAXSYMLINKS 40

#define LOWFDS 64                   /* mirrored descriptors a thread may hold */

struct thread_entry {
    int tid;                        /* 0: free, -1: deleted */
    int tgid;
    int flags;
    int nlow;                       /* descriptors the view mirrors */
    int low[LOWFDS];
    int win[LOWFDS];                /* low[i]'s window (window.c), or 0 */
    int lowflags[LOWFDS];           /* UMVU_FD_* */
    char *lowpath[LOWFDS];          /* a directory's view path, or NULL */
    char *lowhost[LOWFDS];          /* and the host file it stands for */
    char *cwd;
    int pending;                    /* rewritten: registers to put back */
    char *popen_view, *popen_host;  /* an open rewritten: its paths... */
    unsigned long popen_flags;      /* ...and flags */
    int pdup;                       /* a dup on its way: 1 + the old fd's index */
    int pdup_old;                   /* the old fd */
    int pdup_cloexec;
    signed char preg[2];
    unsigned long psave[2];
};

/* a mount as umvu_set_mounts keeps it: own copies of the strings */
struct mount {
    char *path;
    size_t len;
    char *host;                     /* the host directory, or NULL */
    char *bottom;                   /* layers: the bottom one, else NULL */
    char *store;                    /* layers: the top's bookkeeping... */
    size_t store_len;
    char *meta_suffix;              /* ...and its suffix of metadata files */
};

/* Python's worker threads update the tables while the tracer's thread
 * reads them in the wait loop. */
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct umvu_fast_row rows[UMVU_NR_MAX];
static int proc_virtual;            /* some process has virtual cwd/fd/exe */
static struct umvu_stats stats;
static struct thread_entry threads[TABLE_SIZE];
static struct mount *mounts;
static int nmounts;

/* what fast_decide said to rewrite: argument, its dirfd, the host path;
 * for an open, its flags and the path in the view */
static int rw_arg, rw_at;
static char rw_path[UMVU_PATH_MAX + 1];
static int rw_open;
static unsigned long rw_flags;
static char rw_view[UMVU_PATH_MAX + 1];


int umvu_set_fast_rows(const struct umvu_fast_row *given, int n)
{
    if (n < 0 || n > UMVU_NR_MAX)
        return -EINVAL;
    pthread_mutex_lock(&table_lock);
    memset(rows, 0, sizeof rows);   /* UMVU_FAST_PYTHON */
    memcpy(rows, given, sizeof *rows * (size_t)n);
    pthread_mutex_unlock(&table_lock);
    return 0;
}

void umvu_set_proc_virtual(int on)
{
    pthread_mutex_lock(&table_lock);
    proc_virtual = on;
    pthread_mutex_unlock(&table_lock);
}

void umvu_get_stats(struct umvu_stats *out)
{
    pthread_mutex_lock(&table_lock);
    *out = stats;
    pthread_mutex_unlock(&table_lock);
}

static unsigned slot(int tid)
{
    return ((unsigned)tid * 2654435761u) & (TABLE_SIZE - 1);
}

static struct thread_entry *lookup(int tid)
{
    for (unsigned i = slot(tid), n = 0; n < TABLE_SIZE; i = (i + 1) & (TABLE_SIZE - 1), n++) {
        if (threads[i].tid == tid)
            return &threads[i];
        if (threads[i].tid == 0)
            return NULL;
    }
    return NULL;
}

static int set_thread(int tid, int tgid, int flags, const char *cwd,
                      const struct umvu_fd *fds, int nfds);
static void forget_open(struct thread_entry *e);
static int dup_done(struct thread_entry *e, int tid, struct umvu_journal_entry *out);

int umvu_set_thread(int tid, int tgid, int flags, const char *cwd,
                    const struct umvu_fd *fds, int nfds)
{
    pthread_mutex_lock(&table_lock);
    int r = set_thread(tid, tgid, flags, cwd, fds, nfds);
    pthread_mutex_unlock(&table_lock);
    return r;
}

/* Descriptor fd in e's table (in place of one of that number): its window,
 * UMVU_FD_* flags, and a directory's view path with its host file (both
 * or neither, copied). A full table makes the thread Python's. */
static void put_fd(struct thread_entry *e, int fd, int window, int flags,
                   const char *path, const char *host)
{
    int i = -1;
    for (int k = 0; k < e->nlow; k++)
        if (e->low[k] == fd)
            i = k;
    if (i < 0) {
        if (e->nlow >= LOWFDS) {
            e->flags |= UMVU_TF_PYTHON;     /* Python's sync says so too */
            return;
        }
        i = e->nlow++;
    } else {
        free(e->lowpath[i]);
        free(e->lowhost[i]);
    }
    e->low[i] = fd;
    e->win[i] = window;
    e->lowflags[i] = flags;
    e->lowpath[i] = path && host ? strdup(path) : NULL;
    e->lowhost[i] = path && host ? strdup(host) : NULL;
    if (!e->lowpath[i] != !e->lowhost[i]) {     /* no memory: Python decides */
        free(e->lowpath[i]);
        free(e->lowhost[i]);
        e->lowpath[i] = e->lowhost[i] = NULL;
    }
}

static void free_lowpaths(struct thread_entry *e)
{
    for (int i = 0; i < e->nlow; i++) {
        free(e->lowpath[i]);
        free(e->lowhost[i]);
        e->lowpath[i] = e->lowhost[i] = NULL;
    }
    e->nlow = 0;
}

static int set_thread(int tid, int tgid, int flags, const char *cwd,
                      const struct umvu_fd *fds, int nfds)
{
    struct thread_entry *e = lookup(tid);
    if (!e) {
        unsigned i = slot(tid), n = 0;
        while (threads[i].tid > 0 && n++ < TABLE_SIZE)
            i = (i + 1) & (TABLE_SIZE - 1);
        if (n >= TABLE_SIZE)
            return -ENOSPC;
        e = &threads[i];
        e->cwd = NULL;
        e->pending = 0;
        e->nlow = 0;
        e->popen_view = e->popen_host = NULL;
        e->pdup = 0;
    }
    char *copy = strdup(cwd);
    if (!copy)
        return -ENOMEM;
    free(e->cwd);
    e->tid = tid;
    e->tgid = tgid;
    e->flags = flags;
    e->cwd = copy;
    free_lowpaths(e);
    if (nfds > LOWFDS) {
        e->flags |= UMVU_TF_PYTHON;
        nfds = 0;
    }
    for (int i = 0; i < nfds; i++)
        put_fd(e, fds[i].fd, fds[i].window, fds[i].flags, fds[i].path, fds[i].host);
    return 0;
}

/* A clone the wait loop handled alone: the child starts with its parent's
 * entry (same cwd, flags and descriptors: a fork copies them, a thread
 * shares them), so that its first calls (the exec after a fork) need not
 * wait for Python's replay of the journal, which sets it again. */
void umvu_fast_clone(int parent, int child, unsigned long flags)
{
    pthread_mutex_lock(&table_lock);
    struct thread_entry *p = lookup(parent);
    if (p && !lookup(child) && p->cwd) {
        struct umvu_fd fds[LOWFDS];
        for (int i = 0; i < p->nlow; i++) {
            fds[i].fd = p->low[i];
            fds[i].window = p->win[i];
            fds[i].flags = p->lowflags[i];
            fds[i].path = p->lowpath[i];
            fds[i].host = p->lowhost[i];
        }
        char *cwd = strdup(p->cwd);
        int shared = (flags & 0x400) ? UMVU_TF_SHARED : 0;         /* CLONE_FILES */
        p->flags |= shared;
        if (cwd)
            set_thread(child, (flags & 0x10000) ? p->tgid : child,  /* CLONE_THREAD */
                       p->flags | shared, cwd, fds, p->nlow);
        free(cwd);
    }
    pthread_mutex_unlock(&table_lock);
}

void umvu_fast_exec(int tid, int former)
{
    pthread_mutex_lock(&table_lock);
    struct thread_entry *e = lookup(tid);
    if (e)
        e->flags |= UMVU_TF_PYTHON;
    if (former != tid && (e = lookup(former)) != NULL)
        e->flags |= UMVU_TF_PYTHON;
    pthread_mutex_unlock(&table_lock);
}

void umvu_forget_thread(int tid)
{
    pthread_mutex_lock(&table_lock);
    struct thread_entry *e = lookup(tid);
    if (e) {
        free(e->cwd);
        e->cwd = NULL;
        free_lowpaths(e);
        forget_open(e);
        e->pdup = 0;
        e->tid = -1;
    }
    pthread_mutex_unlock(&table_lock);
}

static int set_mounts(const struct umvu_mount *given, int n);

int umvu_set_mounts(const struct umvu_mount *given, int n)
{
    pthread_mutex_lock(&table_lock);
    int r = set_mounts(given, n);
    pthread_mutex_unlock(&table_lock);
    return r;
}

static void free_mounts(void)
{
    for (int i = 0; i < nmounts; i++) {
        free(mounts[i].path);
        free(mounts[i].host);
        free(mounts[i].bottom);
        free(mounts[i].store);
        free(mounts[i].meta_suffix);
    }
    free(mounts);
    mounts = NULL;
    nmounts = 0;
}

static char *dup_or_null(const char *s, int *failed)
{
    char *copy = s ? strdup(s) : NULL;
    if (s && !copy)
        *failed = 1;
    return copy;
}

static int set_mounts(const struct umvu_mount *given, int n)
{
    for (int i = 0; i < n; i++)
        if (!given[i].path)
            return -EINVAL;
    free_mounts();
    mounts = calloc((size_t)n + 1, sizeof *mounts);
    if (!mounts)
        return -ENOMEM;
    int failed = 0;
    for (int i = 0; i < n; i++) {
        const struct umvu_mount *g = &given[i];
        struct mount *m = &mounts[i];
        nmounts = i + 1;            /* freed on failure */
        m->path = dup_or_null(g->path, &failed);
        m->len = m->path ? strlen(m->path) : 0;
        m->host = dup_or_null(g->host, &failed);
        /* layers are walked only with their whole protocol */
        if (m->host && g->bottom) {
            if (!g->store || !*g->store || strchr(g->store, '/') ||
                !g->meta_suffix || !*g->meta_suffix) {
                free(m->host);
                m->host = NULL;
                continue;
            }
            m->bottom = dup_or_null(g->bottom, &failed);
            m->store = dup_or_null(g->store, &failed);
            m->store_len = strlen(g->store);
            m->meta_suffix = dup_or_null(g->meta_suffix, &failed);
        }
    }
    if (failed) {
        free_mounts();
        return -ENOMEM;
    }
    return 0;
}

static int covers(int i, const char *path, size_t len)
{
    size_t m = mounts[i].len;
    if (m == 1 && mounts[i].path[0] == '/')
        return 1;
    return len >= m && memcmp(path, mounts[i].path, m) == 0 &&
           (path[m] == '/' || path[m] == '\0');
}

/* The newest mount whose mount point is path or above it, or -1. */
static int covering(const char *path, size_t len)
{
    for (int i = nmounts - 1; i >= 0; i--)
        if (covers(i, path, len))
            return i;
    return -1;
}

static int is_mount_point(const char *path)
{
    for (int i = 0; i < nmounts; i++)
        if (strcmp(path, mounts[i].path) == 0)
            return 1;
    return 0;
}

static int join_host(char *out, size_t size, const char *dir, const char *rel)
{
    if (strcmp(dir, "/") == 0)
        dir = "";
    int n = *rel ? snprintf(out, size, "%s%s", dir, rel)
                 : snprintf(out, size, "%s", *dir ? dir : "/");
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* Which layer of layered mount m shows rel ("" or "/..."): the top one if
 * it has rel, else the bottom one, by the mount's layer protocol (struct
 * umvu_mount). -1 (ask Python): rel is the bookkeeping itself, deleted, or
 * has metadata of its own. */
static int layer_of(const struct mount *m, const char *rel, char *out, size_t size)
{
    char book[2 * UMVU_PATH_MAX];
    struct stat st;
    const char *after = rel + 1 + m->store_len;
    if (rel[0] == '/' && strncmp(rel + 1, m->store, m->store_len) == 0 &&
        (*after == '/' || !*after))
        return -1;
    int n = snprintf(book, sizeof book, "%s/%s%s", strcmp(m->host, "/") ? m->host : "",
                     m->store, rel);
    if (n < 0 || (size_t)n + strlen(m->meta_suffix) >= sizeof book)
        return -1;
    if (stat(book, &st) == 0 ? S_ISREG(st.st_mode) : errno != ENOENT)
        return -1;                  /* a whiteout, or below one (ENOTDIR) */
    strcat(book, m->meta_suffix);
    if (lstat(book, &st) == 0 || errno != ENOENT)
        return -1;                  /* metadata the host file cannot carry */
    if (join_host(out, size, m->host, rel) < 0)
        return -1;
    if (lstat(out, &st) == 0)
        return 0;
    if (errno != ENOENT)
        return -1;
    return join_host(out, size, m->bottom, rel);
}

/* The host path of a view path below mount m (m < 0: the path itself).
 * -1: too long, or in /proc (whose self links are the caller's), or a
 * layered mount's path Python must see. */
static int host_of(int m, const char *view, char *out, size_t size)
{
    if (m < 0)
        return join_host(out, size, "", view);
    const struct mount *mt = &mounts[m];
    const char *rel = mt->len == 1 ? view : view + mt->len;
    if (mt->bottom ? layer_of(mt, rel, out, size) < 0
                   : join_host(out, size, mt->host, rel) < 0)
        return -1;
    if (strncmp(out, "/proc", 5) == 0 && (out[5] == '/' || !out[5]))
        return -1;
    return 0;
}

/* /proc/PID/{cwd,root,exe,fd/..}, or .../mounts and .../mountinfo: the view
 * may answer those differently from the kernel. */
static int proc_special(const char *path)
{
    if (strncmp(path, "/proc/", 6) != 0)
        return 0;
    const char *last = strrchr(path, '/') + 1;
    if (strcmp(last, "mounts") == 0 || strcmp(last, "mountinfo") == 0)
        return nmounts > 0;
    if (!proc_virtual)
        return 0;
    return strstr(path, "/cwd") || strstr(path, "/root") || strstr(path, "/exe") ||
           strstr(path, "/fd");
}

struct walk {
    char cur[UMVU_PATH_MAX];
    size_t len;
};

static int walk_push(struct walk *w, const char *name, size_t n)
{
    if (w->len + 1 + n + 1 > sizeof w->cur)
        return -1;
    if (w->len > 1)
        w->cur[w->len++] = '/';
    else
        w->len = 1;
    memcpy(w->cur + w->len, name, n);
    w->len += n;
    w->cur[w->len] = '\0';
    return 0;
}

static void walk_pop(struct walk *w)
{
    while (w->len > 1 && w->cur[w->len - 1] != '/')
        w->len--;
    if (w->len > 1)
        w->len--;
    w->cur[w->len] = '\0';
}

/* The end of a walk: 1 when the kernel, given the caller's own string,
 * reaches what the view would; 2 (host set) when it must be given host;
 * 0 ask Python. */
static int walk_end(int mapped, const char *view, const char *path, char *host,
                    int rewrite)
{
    if (proc_special(view))
        return 0;
    if (!mapped)
        return 1;
    if (is_mount_point(view) || strncmp(view, "/proc/", 6) == 0)
        return 0;                   /* EBUSY, EEXIST, /proc/PID...: Python's */
    if (host_of(covering(view, strlen(view)), view, host, UMVU_PATH_MAX) < 0)
        return 0;
    if (rewrite == UMVU_REWRITE_OPEN) {     /* the mirror wants the view's name */
        if (strlen(view) > UMVU_PATH_MAX)
            return 0;
        strcpy(rw_view, view);
    }
    size_t n = strlen(path), h = strlen(host);
    if (n > 1 && path[n - 1] == '/' && host[h - 1] != '/') {
        if (h + 2 > UMVU_PATH_MAX)
            return 0;
        strcpy(host + h, "/");
    }
    return strcmp(host, path) == 0 ? 1 : 2;
}

/* The index of a descriptor the view mirrors, or -1. */
static int mirrored(const struct thread_entry *t, long fd)
{
    for (int i = 0; i < t->nlow; i++)
        if (t->low[i] == fd)
            return i;
    return -1;
}

/* A descriptor the view does not mirror: the kernel's answer is the view's. */
static int fd_is_plain(const struct thread_entry *t, long fd)
{
    return mirrored(t, fd) < 0;
}

/* May the C core walk below mount m for this call? Layers only for
 * stat-like calls (the rest may copy up: Python's). */
static int walkable(const struct thread_entry *t, int m, int rewrite)
{
    /* (an exec below a mount is Python's: noexec, the exe /proc shows) */
    return mounts[m].host && !(t->flags & UMVU_TF_NOMAP) &&
           (!mounts[m].bottom || rewrite == 1) && rewrite != UMVU_REWRITE_EXEC;
}

/* Walk `path` as the view would. 1: the kernel resolves it exactly so and
 * reaches nothing virtual; 2: the same holds for the host path written to
 * host (below plain bind mounts); 0: ask Python. */
static int path_decide(const struct thread_entry *t, int dirfd, const char *path,
                       int follow_last, int rewrite, char *host)
{
    struct walk w;
    char todo[2 * UMVU_PATH_MAX], link[UMVU_PATH_MAX], real[UMVU_PATH_MAX];
    size_t plen = strlen(path);
    int mapped = 0;                 /* a component lay below a bind */

    if (plen == 0 || plen >= UMVU_PATH_MAX)
        return 0;
    if (path[0] == '/') {
        strcpy(w.cur, "/");
    } else if (dirfd == UMVU_AT_FDCWD) {
        if (strlen(t->cwd) >= sizeof w.cur)
            return 0;
        strcpy(w.cur, t->cwd);
    } else {
        char fdlink[64];        /* the thread's own table: its leader may be gone */
        snprintf(fdlink, sizeof fdlink, "/proc/%d/fd/%d", t->tid, dirfd);
        ssize_t n = readlink(fdlink, w.cur, sizeof w.cur - 1);
        if (n <= 0 || w.cur[0] != '/')
            return 0;               /* a bad dirfd, or not a directory: Python */
        w.cur[n] = '\0';
        int i = mirrored(t, dirfd);
        if (i >= 0) {
            /* a directory the view opened, if it still is: its view path */
            if (!t->lowpath[i] || strcmp(w.cur, t->lowhost[i]) != 0 ||
                strlen(t->lowpath[i]) >= sizeof w.cur)
                return 0;
            strcpy(w.cur, t->lowpath[i]);
        }
    }
    w.len = strlen(w.cur);
    int start = covering(w.cur, w.len);     /* a cwd or dirfd below a mount */
    if (start >= 0 && !walkable(t, start, rewrite))
        return 0;
    mapped = start >= 0;

    /* components still to walk, last first, '\0' separated */
    memcpy(todo, path, plen + 1);
    char *rest = todo;
    int links = 0;
    while (*rest) {
        while (*rest == '/')
            rest++;
        if (!*rest)
            break;
        char *end = strchr(rest, '/');
        size_t n = end ? (size_t)(end - rest) : strlen(rest);
        char *next = end ? end : rest + n;
        int last = 1;
        for (char *p = next; *p; p++)
            if (*p != '/') {
                last = 0;
                break;
            }
        int trailing = end != NULL;
        if (n == 1 && rest[0] == '.') {
            rest = next;
            continue;
        }
        if (n == 2 && rest[0] == '.' && rest[1] == '.') {
            walk_pop(&w);
            rest = next;
            continue;
        }
        if (walk_push(&w, rest, n) < 0)
            return 0;
        int m = covering(w.cur, w.len);
        if ((m >= 0 && !walkable(t, m, rewrite)) || proc_special(w.cur))
            return 0;
        const char *at = w.cur;     /* where the host has this component */
        if (m >= 0) {
            if (host_of(m, w.cur, real, sizeof real) < 0)
                return 0;
            at = real;
            mapped = 1;
        }
        /* a trailing slash follows a last symlink, but not for calls that
         * act on the name itself (mkdir, unlink, rmdir: 3) */
        if (last && !follow_last && (!trailing || rewrite == 3))
            break;
        if (m < 0 && (strcmp(w.cur, "/proc/self") == 0 ||
                      strcmp(w.cur, "/proc/thread-self") == 0)) {
            /* the hypervisor's /proc/self is not the tracee's */
            w.len = (size_t)(w.cur[6] == 's'
                ? snprintf(w.cur, sizeof w.cur, "/proc/%d", t->tgid)
                : snprintf(w.cur, sizeof w.cur, "/proc/%d/task/%d", t->tgid, t->tid));
            rest = next;
            continue;
        }
        struct stat st;
        if (lstat(at, &st) < 0) {
            if (errno != ENOENT)
                return 0;
            /* the rest does not exist: a mount point could still lie below */
            for (const char *p = next; *p; p++)
                if (p[0] == '.' && (p[1] == '.' || p[1] == '/' || !p[1]) &&
                    (p == next || p[-1] == '/'))
                    return 0;
            char full[3 * UMVU_PATH_MAX];
            int k = snprintf(full, sizeof full, "%s%s", w.cur, next);
            if (k <= 0 || (size_t)k >= UMVU_PATH_MAX || covering(full, (size_t)k) != m)
                return 0;
            return walk_end(mapped, full, path, host, rewrite);
        }
        if (S_ISLNK(st.st_mode)) {
            if (++links > MAXSYMLINKS)
                return 0;
            ssize_t l = readlink(at, link, sizeof link - 1);
            if (l <= 0)
                return 0;
            link[l] = '\0';
            size_t restlen = strlen(next);
            if ((size_t)l + 1 + restlen + 1 > sizeof todo)
                return 0;
            /* todo becomes: link target + what was left */
            memmove(todo + l, next, restlen + 1);
            memcpy(todo, link, (size_t)l);
            rest = todo;
            if (link[0] == '/')
                strcpy(w.cur, "/"), w.len = 1;
            else
                walk_pop(&w);
            continue;
        }
        if (!last && !S_ISDIR(st.st_mode))
            return !mapped;         /* ENOTDIR, from the kernel too */
        rest = next;
    }
    return walk_end(mapped, w.cur, path, host, rewrite);
}

/* A descriptor call of class cls (UMVU_FDC_*) the kernel may answer: a
 * plain descriptor, or a mirrored one whose flags say the kernel's answer
 * to such a call is the view's. */
static int flags_native(int f, int cls)
{
    return ((f & UMVU_FD_NATIVE) && cls != UMVU_FDC_TABLE) ||
           ((f & UMVU_FD_READS) && (cls == UMVU_FDC_DATA || cls == UMVU_FDC_STAT)) ||
           ((f & UMVU_FD_STAT) && cls == UMVU_FDC_STAT);
}

static int fd_native(const struct thread_entry *t, long fd, int cls)
{
    int i = mirrored(t, fd);
    return i < 0 || flags_native(t->lowflags[i], cls);
}


static enum umvu_verdict fast_decide(int tid, long nr, const unsigned long *args,
                                     long *result, struct umvu_journal_entry *journal);

/* An exec the kernel may run as it is: the file (reached as the caller
 * names it: nothing virtual on the way) is no `#!` script, or its
 * interpreter is an absolute path that reaches nothing virtual and is no
 * script itself (deeper chains: Python's). */
static int script_untouched(const struct thread_entry *t, const char *path)
{
    char file[UMVU_PATH_MAX + 8], head[258], interp[UMVU_PATH_MAX], host[UMVU_PATH_MAX + 1];
    for (int depth = 0; depth < 2; depth++) {
        int n = path[0] == '/' ? snprintf(file, sizeof file, "%s", path)
                               : snprintf(file, sizeof file, "%s/%s", t->cwd, path);
        if (n < 0 || (size_t)n >= sizeof file)
            return 0;
        int fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
            return 1;               /* the kernel says why */
        struct stat st;
        ssize_t got = fstat(fd, &st) == 0 && S_ISREG(st.st_mode)
                      ? read(fd, head, 256) : 0;
        close(fd);
        if (got < 2 || head[0] != '#' || head[1] != '!')
            return 1;               /* not a script: the kernel's */
        if (depth == 1)
            return 0;               /* an interpreter that is a script */
        head[got] = '\0';
        char *p = head + 2, *end;
        while (*p == ' ' || *p == '\t')
            p++;
        for (end = p; *end && *end != ' ' && *end != '\t' && *end != '\n'; end++)
            ;
        if (*p != '/' || !memchr(head, '\n', (size_t)got) ||
            (size_t)(end - p) >= sizeof interp)
            return 0;
        memcpy(interp, p, (size_t)(end - p));
        interp[end - p] = '\0';
        if (path_decide(t, UMVU_AT_FDCWD, interp, 1, UMVU_REWRITE_EXEC, host) != 1)
            return 0;
        path = interp;
    }
    return 0;
}

/* Called at a seccomp stop (the verdicts: fastpath.h). */
enum umvu_verdict umvu_fast_decide(int tid, long nr, const unsigned long *args,
                                   long *result, struct umvu_journal_entry *journal)
{
    if (nr < 0 || nr >= UMVU_NR_MAX || rows[nr].kind == UMVU_FAST_PYTHON)
        return UMVU_V_PYTHON;
    pthread_mutex_lock(&table_lock);
    enum umvu_verdict r = fast_decide(tid, nr, args, result, journal);
    if (r == UMVU_V_RESUME)
        stats.resumed++;
    pthread_mutex_unlock(&table_lock);
    return r;
}

static void drop_fd(struct thread_entry *e, int i)
{
    free(e->lowpath[i]);
    free(e->lowhost[i]);
    e->nlow--;
    e->low[i] = e->low[e->nlow];
    e->win[i] = e->win[e->nlow];
    e->lowflags[i] = e->lowflags[e->nlow];
    e->lowpath[i] = e->lowpath[e->nlow];
    e->lowhost[i] = e->lowhost[e->nlow];
    e->lowpath[e->nlow] = e->lowhost[e->nlow] = NULL;
}

static void journal_fd(struct umvu_journal_entry *j, int kind, int tid, int fd,
                       unsigned long msg, unsigned long flags)
{
    memset(j, 0, offsetof(struct umvu_journal_entry, path) + 1);
    j->kind = kind;
    j->tid = tid;
    j->status = fd;
    j->msg = msg;
    j->flags = flags;
}

/* close, dup*, fcntl(F_DUPFD*, F_SETFD) of mirrored descriptor i (fd)
 * whose table changes C may make itself (UMVU_FD_TABLE_C). */
static enum umvu_verdict table_call(struct thread_entry *t, int i, long nr,
                                    const unsigned long *args,
                                    struct umvu_journal_entry *journal)
{
    int fd = t->low[i];
    if (!(t->lowflags[i] & UMVU_FD_TABLE_C) || (t->flags & UMVU_TF_SHARED))
        return UMVU_V_PYTHON;
    int cmd = nr == SYS_fcntl ? (int)args[1] : -1;
    if (nr == SYS_close) {                                      /* close */
        drop_fd(t, i);
        journal_fd(journal, UMVU_EV_FD_CLOSED, t->tid, fd, 0, 0);
        return UMVU_V_JOURNALED;
    }
    if (nr == SYS_fcntl && cmd == F_SETFD) {                         /* F_SETFD */
        journal_fd(journal, UMVU_EV_FD_CLOEXEC, t->tid, fd, 0, args[2] & 1);
        return UMVU_V_JOURNALED;
    }
    if (nr == SYS_fcntl && cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC)
        return UMVU_V_RESUME;   /* F_GETFD, F_GETFL, locks...: the kernel's */
    if (!(t->lowflags[i] & UMVU_FD_DUP_C))
        return UMVU_V_PYTHON;
    int target = (nr == SYS_dup2 || nr == SYS_dup3) ? (int)args[1] : -1;
    if (target == fd || (nr == SYS_dup3 && (args[2] & ~(unsigned long)O_CLOEXEC)))
        return UMVU_V_PYTHON;   /* dup2(fd, fd), odd dup3 flags */
    int k = target >= 0 ? mirrored(t, target) : -1;
    if (k >= 0 && !(t->lowflags[k] & UMVU_FD_TABLE_C))
        return UMVU_V_PYTHON;   /* it closes a served file */
    t->pdup = 1;
    t->pdup_old = fd;
    t->pdup_cloexec = (nr == SYS_fcntl && cmd == F_DUPFD_CLOEXEC) ||
                     (nr == SYS_dup3 && (args[2] & O_CLOEXEC));
    return UMVU_V_TO_EXIT;
}

static int is_table_call(long nr)
{
    return nr == SYS_close || nr == SYS_dup || nr == SYS_dup2 || nr == SYS_dup3 ||
           nr == SYS_fcntl;
}

static enum umvu_verdict fast_decide(int tid, long nr, const unsigned long *args,
                                     long *result, struct umvu_journal_entry *journal)
{
    if (nr < 0 || nr >= UMVU_NR_MAX)
        return UMVU_V_PYTHON;
    const struct umvu_fast_row *info = &rows[nr];
    if (info->kind == UMVU_FAST_RESUME)
        return UMVU_V_RESUME;
    if (info->kind != UMVU_FAST_PATH && info->kind != UMVU_FAST_FD)
        return UMVU_V_PYTHON;
    struct thread_entry *t = lookup(tid);
    if (!t || (t->flags & UMVU_TF_PYTHON))
        return UMVU_V_PYTHON;
    if (info->kind == UMVU_FAST_FD) {
        int i = info->path >= 0 ? mirrored(t, (int)args[info->path]) : -1;
        if (i >= 0 && t->win[i] && info->path == 0 && info->path2 < 0 &&
            umvu_window_handles(nr)) {  /* a window's data call: answered here */
            *result = umvu_window_call(t->win[i], tid, nr, args);
            stats.windows++;
            return UMVU_V_ANSWERED;
        }
        if (i >= 0 && info->fdclass == UMVU_FDC_TABLE && is_table_call(nr)) {
            enum umvu_verdict v = table_call(t, i, nr, args, journal);
            if (v != UMVU_V_PYTHON) {
                stats.fds++;
                return v;
            }
        }
        if ((i >= 0 && !flags_native(t->lowflags[i], info->fdclass)) ||
            (info->path2 >= 0 && !fd_native(t, (int)args[info->path2], info->fdclass)))
            return UMVU_V_PYTHON;
        stats.fds++;
        return UMVU_V_RESUME;
    }
    int paths[2][2] = { { info->path, info->at }, { info->path2, info->at2 } };
    enum umvu_verdict verdict = UMVU_V_RESUME;
    for (int i = 0; i < 2; i++) {
        int pi = paths[i][0], ai = paths[i][1];
        if (pi < 0)
            continue;
        if (args[pi] == 0) {        /* utimensat(fd, NULL...): an fd call */
            if (ai >= 0 && !fd_native(t, (int)args[ai], UMVU_FDC_ATTR))
                return UMVU_V_PYTHON;
            continue;
        }
        char path[UMVU_PATH_MAX];
        long n = umvu_read_str(tid, args[pi], path, sizeof path);
        if (n < 0)
            return n == -ENAMETOOLONG ? UMVU_V_RESUME : UMVU_V_PYTHON;
        int dirfd = ai >= 0 ? (int)args[ai] : UMVU_AT_FDCWD;
        if (n == 0) {               /* "" with AT_EMPTY_PATH: the fd itself */
            /* (a call with no flags column in the table may still take
             * AT_EMPTY_PATH in flags we do not know: count it as one) */
            if ((info->empty < 0 || (args[info->empty] & 0x1000)) &&
                !fd_native(t, dirfd, info->rewrite == 1 ? UMVU_FDC_STAT : UMVU_FDC_ATTR))
                return UMVU_V_PYTHON;
            continue;
        }
        if (dirfd != UMVU_AT_FDCWD && path[0] != '/' && !fd_is_plain(t, dirfd) &&
            !t->lowpath[mirrored(t, dirfd)])
            return UMVU_V_PYTHON;               /* relative to a mirrored file: Python's */
        /* (a cwd below a mount: path_decide asks Python unless a bind) */
        int follow = 1;
        if (info->follow == UMVU_FOLLOW_NEVER)
            follow = 0;
        else if (info->follow == UMVU_FOLLOW_AT)
            follow = !(args[info->follow_arg] & 0x100);
        else if (info->follow == UMVU_FOLLOW_O)
            follow = !(args[info->follow_arg] & 0400000);
        unsigned long oflags = 0;
        if (info->rewrite == UMVU_REWRITE_OPEN) {
            /* creat() has no flags argument */
            oflags = info->follow == UMVU_FOLLOW_O ? args[info->follow_arg] : 01101;
            if ((oflags & 0300) == 0300)
                follow = 0;         /* O_CREAT|O_EXCL: a last link is not followed */
        }
        int r = path_decide(t, dirfd, path, follow, info->rewrite, rw_path);
        if (info->rewrite == UMVU_REWRITE_EXEC) {
            if (r != 1 || !script_untouched(t, path))
                return UMVU_V_PYTHON;
            stats.paths++;
            return UMVU_V_RESUME;
        }
        if (r == 2 && (!info->rewrite || info->path2 >= 0))
            return UMVU_V_PYTHON;           /* two-path calls: Python's */
        if (r != 1 && r != 2)
            return UMVU_V_PYTHON;
        if (r == 2) {
            rw_arg = pi;
            rw_at = ai;
            verdict = UMVU_V_REWRITE;
            rw_open = info->rewrite == UMVU_REWRITE_OPEN;
            rw_flags = oflags;
            if (rw_open && (t->flags & UMVU_TF_SHARED))
                return UMVU_V_PYTHON;
        }
    }
    stats.paths++;
    return verdict;
}

static const size_t ARG_OFF[6] = {
    offsetof(struct umvu_regs, rdi), offsetof(struct umvu_regs, rsi),
    offsetof(struct umvu_regs, rdx), offsetof(struct umvu_regs, r10),
    offsetof(struct umvu_regs, r8), offsetof(struct umvu_regs, r9),
};

static unsigned long *reg(struct umvu_regs *r, int i)
{
    return (unsigned long *)((char *)r + ARG_OFF[i]);
}

int umvu_fast_rewrite(int tid, unsigned long sp)
{
    size_t len = strlen(rw_path) + 1;
    unsigned long addr = (sp - 128 - len) & ~15UL;   /* below the red zone */
    struct umvu_regs regs;
    if (umvu_write(tid, addr, rw_path, len) != (long)len || umvu_getregs(tid, &regs) < 0)
        return -1;
    pthread_mutex_lock(&table_lock);
    struct thread_entry *e = lookup(tid);
    if (e && rw_open) {
        forget_open(e);
        e->popen_view = strdup(rw_view);
        e->popen_host = strdup(rw_path);
        if (!e->popen_view || !e->popen_host) {
            forget_open(e);
            e = NULL;                   /* no memory: Python's */
        } else {
            e->popen_flags = rw_flags;
        }
    }
    if (e) {
        e->pending = 1 + (rw_at >= 0);
        e->preg[0] = (signed char)rw_arg;
        e->psave[0] = *reg(&regs, rw_arg);
        *reg(&regs, rw_arg) = addr;
        if (rw_at >= 0) {
            e->preg[1] = (signed char)rw_at;
            e->psave[1] = *reg(&regs, rw_at);
            *reg(&regs, rw_at) = (unsigned long)(long)UMVU_AT_FDCWD;
        }
    }
    int ok = e && umvu_setregs(tid, &regs) == 0;
    if (e && !ok) {
        e->pending = 0;
        forget_open(e);
    }
    pthread_mutex_unlock(&table_lock);
    return ok ? 0 : -1;
}

/* An open the C core rewrote: a descriptor of a plain bind. The thread's
 * table gets it now (native, with a directory's view path); Python hears
 * of it through the journal (*opened). */
static int opened(struct thread_entry *e, long fd, struct umvu_journal_entry *out)
{
    if (fd < 0)
        return 0;
    journal_fd(out, UMVU_EV_FD_OPENED, e->tid, (int)fd, 0, e->popen_flags);
    snprintf(out->path, sizeof out->path, "%s", e->popen_view);
    struct stat st;                     /* a directory: relative paths below */
    int got = (e->popen_flags & 0400000) ? lstat(e->popen_host, &st)  /* O_NOFOLLOW */
                                         : stat(e->popen_host, &st);
    int dir = (e->popen_flags & 0200000) || (got == 0 && S_ISDIR(st.st_mode));
    put_fd(e, (int)fd, 0, UMVU_FD_NATIVE, dir ? e->popen_view : NULL,
           dir ? e->popen_host : NULL);
    proc_virtual = 1;                   /* its /proc/PID/fd/N is the view's */
    return 1;
}

/* The exit stop of a dup table_call let run: the new descriptor is a copy
 * of the old one's entry. 2 with the journal entry written, 1 when the
 * dup failed. */
static int dup_done(struct thread_entry *e, int tid, struct umvu_journal_entry *out)
{
    struct umvu_regs regs;
    e->pdup = 0;
    if (umvu_getregs(tid, &regs) < 0 || (long)regs.rax < 0)
        return 1;
    int fd = (int)regs.rax;     /* (put_fd replaces what dup2 closed there) */
    /* (the old entry may be gone if Python set the table meanwhile: its
     * replay of the dup copes with whatever it has) */
    int i = mirrored(e, e->pdup_old);
    if (i >= 0)
        put_fd(e, fd, e->win[i], e->lowflags[i], e->lowpath[i], e->lowhost[i]);
    journal_fd(out, UMVU_EV_FD_DUP, tid, fd, (unsigned long)e->pdup_old,
               (unsigned long)e->pdup_cloexec);
    return 2;
}

static void forget_open(struct thread_entry *e)
{
    free(e->popen_view);
    free(e->popen_host);
    e->popen_view = e->popen_host = NULL;
}

/* At a syscall-exit stop: put back what umvu_fast_rewrite changed (the
 * syscall ABI promises the caller its argument registers). 1: done; 2:
 * done, and an open to journal is in *opened. */
int umvu_fast_restore(int tid, struct umvu_journal_entry *journal)
{
    pthread_mutex_lock(&table_lock);
    struct thread_entry *e = lookup(tid);
    if (e && e->pdup) {
        int r = dup_done(e, tid, journal);
        pthread_mutex_unlock(&table_lock);
        return r;
    }
    int n = e ? e->pending : 0;
    signed char which[2] = { 0, 0 };
    unsigned long saved[2] = { 0, 0 };
    if (n) {
        memcpy(which, e->preg, sizeof which);
        memcpy(saved, e->psave, sizeof saved);
        e->pending = 0;
    }
    if (!n) {
        pthread_mutex_unlock(&table_lock);
        return 0;
    }
    struct umvu_regs regs;
    int r = 1;
    if (umvu_getregs(tid, &regs) == 0) {
        if (e->popen_view && opened(e, (long)regs.rax, journal))
            r = 2;
        for (int i = 0; i < n; i++)
            *reg(&regs, which[i]) = saved[i];
        umvu_setregs(tid, &regs);
    }
    forget_open(e);
    pthread_mutex_unlock(&table_lock);
    return r;
}
