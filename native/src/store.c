/* Chunk storage.
 *
 * All file system access goes through directory fds opened once at start-up
 * (the data dir, tmp/, and the 256 shard dirs chunks/00..ff) and *at() calls
 * with names this file generates itself: a chunk's name is only ever the hex
 * form of its 16-byte id, so no client byte can steer a path.
 *
 * A per-shard mutex serialises "look at the name, then link/unlink it, then
 * adjust the counters" so that `used` and `chunks` stay exact even when two
 * connections race on the same id. */
#define _GNU_SOURCE
#include "store.h"

#include "agent.h"
#include "crc.h"
#include "proto.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

/* cachestat(2), Linux 6.5: how much of a file range is in the page cache. Not in this distribution's headers. */
#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif
struct cachestat_range_ {
    uint64_t off, len;
};
struct cachestat_ {
    uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};
static atomic_int g_cachestat_broken; /* the kernel has no cachestat, or a sandbox refuses it */
/* Chunks GET lately: 24 bits of a hash of the id and how many bytes of it GETs asked for, in a slot chosen by the
 * id, overwritten by a later chunk with the same slot. Lossy on purpose: what it forgets, or two chunks that
 * share a slot and 24 bits, only costs a read past the cache, or one through it, more. */
#define RECENT_SLOTS 4096u
#define RECENT_BYTE_BITS 40
#define RECENT_BYTE_MAX ((UINT64_C(1) << RECENT_BYTE_BITS) - 1) /* 1 TiB, past any chunk */
static _Atomic uint64_t g_recent[RECENT_SLOTS];

static int g_rootfd = -1, g_tmpfd = -1, g_chunksfd = -1;
static int g_shardfd[256];
static pthread_mutex_t g_shard_lock[256];
static uint8_t g_agent_id[ID_LEN];

static pthread_mutex_t g_space_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t g_used, g_reserved, g_chunks;

static atomic_uint_fast64_t g_tmp_counter;

static const char hexdig[] = "0123456789abcdef";

void id_to_hex(const uint8_t id[16], char out[33])
{
    for (int i = 0; i < ID_LEN; i++) {
        out[2 * i] = hexdig[id[i] >> 4];
        out[2 * i + 1] = hexdig[id[i] & 15];
    }
    out[32] = 0;
}

static int hexval(int c, int allow_upper)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (allow_upper && c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int hex_to_id(const char *s, uint8_t id[16], int allow_upper)
{
    for (int i = 0; i < ID_LEN; i++) {
        int hi = hexval((unsigned char)s[2 * i], allow_upper);
        int lo = hi < 0 ? -1 : hexval((unsigned char)s[2 * i + 1], allow_upper);
        if (lo < 0)
            return -1;
        id[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* Only names the agent itself could have created count as chunks: 32 lowercase
 * hex digits in the shard of their first byte. */
static int chunk_name_to_id(const char *name, int shard, uint8_t id[16])
{
    if (strlen(name) != ID_HEX_LEN || hex_to_id(name, id, 0) < 0 || id[0] != shard)
        return -1;
    return 0;
}

int errno_status(int err)
{
    return (err == ENOSPC || err == EDQUOT) ? ST_NO_SPACE : ST_IO_ERROR;
}

/* Inverse of stored_size(); -1 if no data length gives this file size. */
static int length_from_file_size(uint64_t size, uint64_t *len)
{
    if (size < FOOTER_LEN)
        return -1;
    uint64_t s = size - FOOTER_LEN;
    uint64_t nb = (s + BLOCK_SIZE + BLOCK_CRC - 1) / (BLOCK_SIZE + BLOCK_CRC);
    if (s < BLOCK_CRC * nb)
        return -1;
    uint64_t l = s - BLOCK_CRC * nb;
    if (stored_size(l) != size)
        return -1;
    *len = l;
    return 0;
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                return -1;
            buf[i] = c;
        }
    }
    return 0;
}

static int open_subdir(int parent, const char *name)
{
    if (mkdirat(parent, name, 0755) < 0 && errno != EEXIST)
        return -1;
    return openat(parent, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* Leftovers of PUTs cut short by a crash or a kill: never part of a chunk. */
static void clean_tmp(void)
{
    int dfd = openat(g_tmpfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        log_msg(LOG_WARN, "cannot list tmp dir err=\"%s\"", strerror(errno));
        return;
    }
    unsigned removed = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (unlinkat(g_tmpfd, de->d_name, 0) == 0 || unlinkat(g_tmpfd, de->d_name, AT_REMOVEDIR) == 0)
            removed++;
        else
            log_msg(LOG_WARN, "cannot remove temporary file name=\"%s\" err=\"%s\"", de->d_name, strerror(errno));
    }
    closedir(d);
    if (removed)
        log_msg(LOG_INFO, "removed temporary files count=%u", removed);
}

static int write_agent_id(void)
{
    uint8_t id[ID_LEN];
    size_t got = 0;
    while (got < sizeof id) {
        ssize_t r = getrandom(id + got, sizeof id - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)r;
    }
    char hex[33];
    id_to_hex(id, hex);
    const char *tmpname = "agent-id.tmp";
    int fd = openat(g_rootfd, tmpname, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    if (write(fd, hex, ID_HEX_LEN) != ID_HEX_LEN || fsync(fd) < 0) {
        int e = errno ? errno : EIO;
        close(fd);
        unlinkat(g_rootfd, tmpname, 0);
        errno = e;
        return -1;
    }
    if (close(fd) < 0 || renameat(g_rootfd, tmpname, g_rootfd, "agent-id") < 0 || fsync(g_rootfd) < 0)
        return -1;
    memcpy(g_agent_id, id, sizeof id);
    log_msg(LOG_INFO, "created agent id agent_id=%s", hex);
    return 0;
}

static int load_agent_id(void)
{
    int fd = openat(g_rootfd, "agent-id", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return write_agent_id();
        return -1;
    }
    char buf[80];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int e = errno;
    close(fd);
    if (n < 0) {
        errno = e;
        return -1;
    }
    buf[n] = 0;
    /* Tolerate a trailing newline from a hand-edited file, nothing else: an
     * agent must never silently change identity. */
    int ok = n >= ID_HEX_LEN && hex_to_id(buf, g_agent_id, 1) == 0;
    for (ssize_t i = ID_HEX_LEN; ok && i < n; i++)
        if (buf[i] != '\n' && buf[i] != '\r' && buf[i] != ' ' && buf[i] != '\t')
            ok = 0;
    if (!ok) {
        errno = EINVAL;
        return -1;
    }
    return 0;
}

struct inode_size {
    dev_t dev;
    ino_t ino;
    uint64_t size;
};

static int cmp_inode(const void *a, const void *b)
{
    const struct inode_size *x = a, *y = b;
    if (x->dev != y->dev)
        return x->dev < y->dev ? -1 : 1;
    return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* `used` counts each chunk file once, however many names (LINK) it has: files
 * with several links are gathered and counted once per inode. */
static void scan_chunks(void)
{
    uint64_t used = 0, count = 0;
    struct inode_size *linked = NULL;
    size_t nlinked = 0, cap = 0;
    for (int s = 0; s < 256; s++) {
        int dfd = openat(g_shardfd[s], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
        if (!d) {
            if (dfd >= 0)
                close(dfd);
            log_msg(LOG_WARN, "cannot list shard shard=%02x err=\"%s\"", s, strerror(errno));
            continue;
        }
        struct dirent *de;
        uint8_t id[ID_LEN];
        while ((de = readdir(d)) != NULL) {
            if (chunk_name_to_id(de->d_name, s, id) < 0)
                continue;
            struct stat st;
            if (fstatat(g_shardfd[s], de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
                continue;
            count++;
            if (st.st_nlink <= 1) {
                used += (uint64_t)st.st_size;
                continue;
            }
            if (nlinked == cap) {
                size_t ncap = cap ? cap * 2 : 256;
                struct inode_size *grown = realloc(linked, ncap * sizeof *linked);
                if (!grown) { /* counted by name instead: an overestimate, never an underestimate */
                    used += (uint64_t)st.st_size;
                    continue;
                }
                linked = grown;
                cap = ncap;
            }
            linked[nlinked++] = (struct inode_size){st.st_dev, st.st_ino, (uint64_t)st.st_size};
        }
        closedir(d);
    }
    if (nlinked)
        qsort(linked, nlinked, sizeof *linked, cmp_inode);
    for (size_t i = 0; i < nlinked; i++)
        if (i == 0 || cmp_inode(&linked[i - 1], &linked[i]) != 0)
            used += linked[i].size;
    free(linked);
    g_used = used;
    g_chunks = count;
}

int store_init(const char *data_dir)
{
    for (int i = 0; i < 256; i++) {
        g_shardfd[i] = -1;
        pthread_mutex_init(&g_shard_lock[i], NULL);
    }
    if (mkdir_p(data_dir) < 0) {
        log_msg(LOG_ERROR, "cannot create data dir path=\"%s\" err=\"%s\"", data_dir, strerror(errno));
        return -1;
    }
    g_rootfd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (g_rootfd < 0) {
        log_msg(LOG_ERROR, "cannot open data dir path=\"%s\" err=\"%s\"", data_dir, strerror(errno));
        return -1;
    }
    g_tmpfd = open_subdir(g_rootfd, "tmp");
    g_chunksfd = g_tmpfd < 0 ? -1 : open_subdir(g_rootfd, "chunks");
    if (g_tmpfd < 0 || g_chunksfd < 0) {
        log_msg(LOG_ERROR, "cannot create dir path=\"%s\" err=\"%s\"", data_dir, strerror(errno));
        return -1;
    }
    for (int i = 0; i < 256; i++) {
        char name[3] = {hexdig[i >> 4], hexdig[i & 15], 0};
        g_shardfd[i] = open_subdir(g_chunksfd, name);
        if (g_shardfd[i] < 0) {
            log_msg(LOG_ERROR, "cannot create shard dir shard=%s err=\"%s\"", name, strerror(errno));
            return -1;
        }
    }
    /* The directories themselves must survive a crash before any chunk is
     * promised durable inside them. */
    if (fsync(g_chunksfd) < 0 || fsync(g_rootfd) < 0) {
        log_msg(LOG_ERROR, "cannot fsync data dir err=\"%s\"", strerror(errno));
        return -1;
    }
    clean_tmp();
    if (load_agent_id() < 0) {
        log_msg(LOG_ERROR, "cannot load or create agent id path=\"%s/agent-id\" err=\"%s\"", data_dir,
                strerror(errno));
        return -1;
    }
    scan_chunks();
    return 0;
}

const uint8_t *store_agent_id(void)
{
    return g_agent_id;
}

void store_info(uint64_t *capacity, uint64_t *used, uint64_t *chunks, uint64_t *fs_free)
{
    struct statvfs vfs;
    uint64_t fs_size = 0, fs_avail = 0;
    if (fstatvfs(g_rootfd, &vfs) == 0) {
        fs_size = (uint64_t)vfs.f_blocks * vfs.f_frsize;
        fs_avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    }
    *capacity = g_cfg.capacity ? g_cfg.capacity : fs_size;
    *fs_free = fs_avail;
    pthread_mutex_lock(&g_space_lock);
    *used = g_used;
    *chunks = g_chunks;
    pthread_mutex_unlock(&g_space_lock);
}

/* Without --capacity the file system's own ENOSPC is the limit, so reservations
 * are still counted (cheap, keeps the code path single) but never refused. */
int store_reserve(uint64_t bytes)
{
    int st = ST_OK;
    pthread_mutex_lock(&g_space_lock);
    if (g_cfg.capacity && g_used + g_reserved + bytes > g_cfg.capacity)
        st = ST_NO_SPACE;
    else
        g_reserved += bytes;
    pthread_mutex_unlock(&g_space_lock);
    return st;
}

void store_unreserve(uint64_t bytes)
{
    pthread_mutex_lock(&g_space_lock);
    g_reserved -= bytes < g_reserved ? bytes : g_reserved;
    pthread_mutex_unlock(&g_space_lock);
}

int store_check_absent(const uint8_t id[16], char *msg)
{
    char hex[33];
    id_to_hex(id, hex);
    struct stat st;
    if (fstatat(g_shardfd[id[0]], hex, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        snprintf(msg, MSG_LEN, "chunk %s already stored", hex);
        return ST_EXISTS;
    }
    if (errno == ENOENT)
        return ST_OK;
    snprintf(msg, MSG_LEN, "stat %s: %s", hex, strerror(errno));
    return ST_IO_ERROR;
}

int store_tmp_create(uint64_t request, char *name, int *fd, char *msg)
{
    uint64_t n = atomic_fetch_add(&g_tmp_counter, 1);
    snprintf(name, 96, "%ld.%" PRIu64 ".%016" PRIx64 ".tmp", (long)getpid(), n, request);
    *fd = openat(g_tmpfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (*fd < 0) {
        int e = errno;
        snprintf(msg, MSG_LEN, "create temporary file: %s", strerror(e));
        return errno_status(e);
    }
    return ST_OK;
}

void store_tmp_discard(int fd, const char *name)
{
    if (fd >= 0)
        close(fd);
    if (unlinkat(g_tmpfd, name, 0) < 0 && errno != ENOENT)
        log_msg(LOG_WARN, "cannot remove temporary file name=\"%s\" err=\"%s\"", name, strerror(errno));
}

int store_commit(int fd, const char *name, const uint8_t id[16], uint64_t file_size, uint64_t reservation,
                 char *msg)
{
    char hex[33];
    id_to_hex(id, hex);
    int shard = id[0];
    int e;

    crash_point("commit-begin");
    if (fsync(fd) < 0) {
        e = errno;
        snprintf(msg, MSG_LEN, "fsync: %s", strerror(e));
        store_tmp_discard(fd, name);
        store_unreserve(reservation);
        return errno_status(e);
    }
    /* close() can report a deferred write error on some file systems. */
    if (close(fd) < 0) {
        e = errno;
        snprintf(msg, MSG_LEN, "close: %s", strerror(e));
        store_tmp_discard(-1, name);
        store_unreserve(reservation);
        return errno_status(e);
    }

    crash_point("commit-fsynced");
    pthread_mutex_lock(&g_shard_lock[shard]);
    /* link(), unlike rename(), refuses to replace an existing name: two PUTs
     * racing on one id cannot overwrite an immutable chunk. */
    if (linkat(g_tmpfd, name, g_shardfd[shard], hex, 0) < 0) {
        e = errno;
        pthread_mutex_unlock(&g_shard_lock[shard]);
        store_tmp_discard(-1, name);
        store_unreserve(reservation);
        if (e == EEXIST) {
            snprintf(msg, MSG_LEN, "chunk %s already stored", hex);
            return ST_EXISTS;
        }
        snprintf(msg, MSG_LEN, "link: %s", strerror(e));
        return errno_status(e);
    }
    pthread_mutex_lock(&g_space_lock);
    g_used += file_size;
    g_chunks++;
    g_reserved -= reservation < g_reserved ? reservation : g_reserved;
    pthread_mutex_unlock(&g_space_lock);
    pthread_mutex_unlock(&g_shard_lock[shard]);
    crash_point("commit-linked");

    store_tmp_discard(-1, name);
    crash_point("commit-tmp-removed");

    if (fsync(g_shardfd[shard]) < 0) {
        e = errno;
        /* Not durable, so not a success; withdraw the name so that the client's
         * retry is not refused with EXISTS. */
        pthread_mutex_lock(&g_shard_lock[shard]);
        if (unlinkat(g_shardfd[shard], hex, 0) == 0) {
            pthread_mutex_lock(&g_space_lock);
            g_used -= file_size;
            g_chunks--;
            pthread_mutex_unlock(&g_space_lock);
        }
        pthread_mutex_unlock(&g_shard_lock[shard]);
        snprintf(msg, MSG_LEN, "fsync dir: %s", strerror(e));
        return errno_status(e);
    }
    crash_point("commit-durable");
    return ST_OK;
}

int store_open_chunk(const uint8_t id[16], struct chunk *ch, char *msg)
{
    char hex[33];
    id_to_hex(id, hex);
    ch->fd = openat(g_shardfd[id[0]], hex, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (ch->fd < 0) {
        int e = errno;
        if (e == ENOENT) {
            snprintf(msg, MSG_LEN, "no chunk %s", hex);
            return ST_NOT_FOUND;
        }
        snprintf(msg, MSG_LEN, "open %s: %s", hex, strerror(e));
        return ST_IO_ERROR;
    }
    struct stat st;
    if (fstat(ch->fd, &st) < 0) {
        snprintf(msg, MSG_LEN, "fstat %s: %s", hex, strerror(errno));
        goto io_error;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < FOOTER_LEN) {
        snprintf(msg, MSG_LEN, "chunk %s: file too short for a footer", hex);
        goto corrupt;
    }
    uint8_t f[FOOTER_LEN];
    ssize_t r = pread(ch->fd, f, sizeof f, st.st_size - FOOTER_LEN);
    if (r < 0) {
        snprintf(msg, MSG_LEN, "read footer %s: %s", hex, strerror(errno));
        goto io_error;
    }
    if (r != (ssize_t)sizeof f) {
        snprintf(msg, MSG_LEN, "chunk %s: short footer", hex);
        goto corrupt;
    }
    if (memcmp(f, FOOTER_MAGIC, 8) != 0) {
        snprintf(msg, MSG_LEN, "chunk %s: bad footer magic", hex);
        goto corrupt;
    }
    if (crc32c(0, f, 28) != get_be32(f + 28)) {
        snprintf(msg, MSG_LEN, "chunk %s: footer checksum mismatch", hex);
        goto corrupt;
    }
    ch->length = get_be64(f + 8);
    if (get_be32(f + 16) != BLOCK_SIZE) {
        snprintf(msg, MSG_LEN, "chunk %s: unsupported block size %u", hex, get_be32(f + 16));
        goto corrupt;
    }
    ch->crc = get_be32(f + 20);
    /* The bound keeps stored_size() from overflowing on a forged length. */
    if (ch->length > (UINT64_C(1) << 60) || stored_size(ch->length) != (uint64_t)st.st_size) {
        snprintf(msg, MSG_LEN, "chunk %s: file size %lld does not match length %" PRIu64, hex,
                 (long long)st.st_size, ch->length);
        goto corrupt;
    }
    ch->nblocks = (ch->length + BLOCK_SIZE - 1) / BLOCK_SIZE;
    ch->direct = ch->cache = 0;
    ch->mtime = st.st_mtime < 0 ? 0 : (uint64_t)st.st_mtime;
    return ST_OK;

corrupt:
    close(ch->fd);
    ch->fd = -1;
    return ST_CORRUPT;
io_error:
    close(ch->fd);
    ch->fd = -1;
    return ST_IO_ERROR;
}

void store_close_chunk(struct chunk *ch)
{
    if (ch->fd >= 0)
        close(ch->fd);
    ch->fd = -1;
}

/* 1 when less than half of [off, off+len) of fd is in the page cache: a direct read then costs the CPU no page
 * cache pages to allocate and fill (on the VM measured, 0.1 against 1.7-2.8 s of system time per GiB read cold).
 * 0 when the kernel cannot tell. */
static int mostly_uncached(int fd, uint64_t off, uint64_t len)
{
    if (atomic_load_explicit(&g_cachestat_broken, memory_order_relaxed))
        return 0;
    struct cachestat_range_ range = {off, len};
    struct cachestat_ cs;
    if (syscall(__NR_cachestat, fd, &range, &cs, 0) != 0) {
        if (errno == ENOSYS || errno == EPERM) {
            atomic_store_explicit(&g_cachestat_broken, 1, memory_order_relaxed);
            log_msg(LOG_INFO, "no cachestat, chunks read through the page cache err=\"%s\"", strerror(errno));
        }
        return 0;
    }
    uint64_t pages = (off + len + IO_ALIGN - 1) / IO_ALIGN - off / IO_ALIGN;
    return cs.nr_cache * 2 < pages;
}

void store_note_get(struct chunk *ch, const uint8_t id[16], uint64_t off, uint64_t end)
{
    if (g_cfg.no_read_admission)
        return; /* ch->cache stays 0: nothing to count */
    /* The whole id, mixed: the chunks of one object share all but their last bytes. */
    uint64_t lo, hi;
    memcpy(&lo, id, sizeof lo);
    memcpy(&hi, id + 8, sizeof hi);
    uint64_t fp = lo ^ (hi * UINT64_C(0x9e3779b97f4a7c15));
    fp ^= fp >> 31;
    fp *= UINT64_C(0xbf58476d1ce4e5b9);
    fp ^= fp >> 29;
    fp >>= RECENT_BYTE_BITS;
    _Atomic uint64_t *slot = &g_recent[fp % RECENT_SLOTS];
    uint64_t seen = atomic_load_explicit(slot, memory_order_relaxed), read, next;
    do {
        read = seen >> RECENT_BYTE_BITS == fp ? seen & RECENT_BYTE_MAX : 0;
        next = read + (end - off) < RECENT_BYTE_MAX ? read + (end - off) : RECENT_BYTE_MAX;
    } while (!atomic_compare_exchange_weak_explicit(slot, &seen, fp << RECENT_BYTE_BITS | next, memory_order_relaxed,
                                                    memory_order_relaxed));
    /* As many bytes of it asked for lately as it holds: it is read again. The windows of one pass over it (a node
     * streams a large object in several GETs, in any order) add up to its length only with the last. */
    ch->cache = ch->length > 0 && read >= ch->length;
}

/* Sets or clears O_DIRECT on the chunk's fd; 0 when it could not be set (the fd stays buffered). */
static int set_direct(struct chunk *ch, int on)
{
    if (ch->direct == on)
        return 1;
    int fl = fcntl(ch->fd, F_GETFL);
    if (fl < 0 || fcntl(ch->fd, F_SETFL, on ? fl | O_DIRECT : fl & ~O_DIRECT) < 0)
        return 0;
    ch->direct = on;
    return 1;
}

int store_read_blocks(struct chunk *ch, uint64_t b0, uint32_t nb, uint8_t *buf, const uint8_t **data, char *msg)
{
    const uint64_t stride = BLOCK_SIZE + BLOCK_CRC;
    uint64_t start = b0 * stride;
    uint64_t end = (b0 + nb) * stride;
    uint64_t data_end = stored_size(ch->length) - FOOTER_LEN;
    if (end > data_end)
        end = data_end;
    /* A direct read covers the blocks rounded out to IO_ALIGN (buffer, offset and length aligned); where it
     * stops short at the end of the file, past the blocks, is fine. */
    int direct = !g_cfg.no_direct_reads && !ch->cache && mostly_uncached(ch->fd, start, end - start);
    if (!set_direct(ch, direct))
        direct = 0;
    uint64_t from = direct ? start / IO_ALIGN * IO_ALIGN : start;
    uint64_t to = direct ? (end + IO_ALIGN - 1) / IO_ALIGN * IO_ALIGN : end;
    size_t need = (size_t)(end - from), want = (size_t)(to - from), got = 0;
    while (got < need) {
        ssize_t r = pread(ch->fd, buf + got, want - got, (off_t)(from + got));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EINVAL && ch->direct && set_direct(ch, 0))
                continue; /* an alignment the file system wants larger, or a short read left got unaligned */
            snprintf(msg, MSG_LEN, "read: %s", strerror(errno));
            return ST_IO_ERROR;
        }
        if (r == 0) {
            snprintf(msg, MSG_LEN, "chunk file shrank while being read");
            return ST_CORRUPT;
        }
        got += (size_t)r;
    }
    const uint8_t *p0 = buf + (start - from);
    for (uint32_t j = 0; j < nb; j++) {
        uint32_t bl = chunk_block_len(ch, b0 + j);
        const uint8_t *p = p0 + (size_t)j * stride;
        if (crc32c(0, p, bl) != get_be32(p + bl)) {
            snprintf(msg, MSG_LEN, "block %" PRIu64 " checksum mismatch", b0 + j);
            return ST_CORRUPT;
        }
    }
    *data = p0;
    return ST_OK;
}

int store_delete(const uint8_t id[16], char *msg)
{
    char hex[33];
    id_to_hex(id, hex);
    int shard = id[0];
    struct stat st;
    pthread_mutex_lock(&g_shard_lock[shard]);
    /* Under the space lock, as LINK: the link count seen is the file's, so the
     * last of its names to go is the one that gives its bytes back. */
    pthread_mutex_lock(&g_space_lock);
    if (fstatat(g_shardfd[shard], hex, &st, AT_SYMLINK_NOFOLLOW) < 0 || unlinkat(g_shardfd[shard], hex, 0) < 0) {
        int e = errno;
        pthread_mutex_unlock(&g_space_lock);
        pthread_mutex_unlock(&g_shard_lock[shard]);
        if (e == ENOENT) {
            snprintf(msg, MSG_LEN, "no chunk %s", hex);
            return ST_NOT_FOUND;
        }
        snprintf(msg, MSG_LEN, "delete %s: %s", hex, strerror(e));
        return ST_IO_ERROR;
    }
    if (st.st_nlink <= 1)
        g_used -= (uint64_t)st.st_size < g_used ? (uint64_t)st.st_size : g_used;
    if (g_chunks)
        g_chunks--;
    pthread_mutex_unlock(&g_space_lock);
    pthread_mutex_unlock(&g_shard_lock[shard]);
    if (fsync(g_shardfd[shard]) < 0) {
        snprintf(msg, MSG_LEN, "fsync dir: %s", strerror(errno));
        return ST_IO_ERROR;
    }
    return ST_OK;
}

int store_link(const uint8_t src[16], const uint8_t dst[16], uint64_t *length, uint32_t *crc, char *msg)
{
    char shex[33], dhex[33];
    id_to_hex(src, shex);
    id_to_hex(dst, dhex);
    if (!memcmp(src, dst, ID_LEN)) {
        snprintf(msg, MSG_LEN, "chunk %s already stored", dhex);
        return ST_EXISTS;
    }
    /* The source must be a whole, well-formed chunk: its footer is read (and
     * its length and CRC returned) before a second name is given to it. */
    struct chunk ch;
    int st = store_open_chunk(src, &ch, msg);
    if (st != ST_OK)
        return st;
    *length = ch.length;
    *crc = ch.crc;
    store_close_chunk(&ch);
    crash_point("link-begin");
    int shard = dst[0];
    pthread_mutex_lock(&g_shard_lock[shard]);
    pthread_mutex_lock(&g_space_lock);
    if (linkat(g_shardfd[src[0]], shex, g_shardfd[shard], dhex, 0) < 0) {
        int e = errno;
        pthread_mutex_unlock(&g_space_lock);
        pthread_mutex_unlock(&g_shard_lock[shard]);
        if (e == EEXIST) {
            snprintf(msg, MSG_LEN, "chunk %s already stored", dhex);
            return ST_EXISTS;
        }
        if (e == ENOENT) { /* deleted since it was opened */
            snprintf(msg, MSG_LEN, "no chunk %s", shex);
            return ST_NOT_FOUND;
        }
        snprintf(msg, MSG_LEN, "link %s: %s", dhex, strerror(e));
        return errno_status(e);
    }
    g_chunks++;
    pthread_mutex_unlock(&g_space_lock);
    pthread_mutex_unlock(&g_shard_lock[shard]);
    crash_point("link-linked");
    if (fsync(g_shardfd[shard]) < 0) {
        int e = errno;
        /* Not durable, so not a success: withdraw the name (as a failed PUT). */
        pthread_mutex_lock(&g_shard_lock[shard]);
        pthread_mutex_lock(&g_space_lock);
        if (unlinkat(g_shardfd[shard], dhex, 0) == 0 && g_chunks)
            g_chunks--;
        pthread_mutex_unlock(&g_space_lock);
        pthread_mutex_unlock(&g_shard_lock[shard]);
        snprintf(msg, MSG_LEN, "fsync dir: %s", strerror(e));
        return errno_status(e);
    }
    crash_point("link-durable");
    return ST_OK;
}

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, ID_LEN);
}

int store_list(int has_cursor, const uint8_t cursor[16], uint32_t max, uint8_t *out, uint32_t *n, int *more,
               char *msg)
{
    uint8_t *ids = NULL;
    size_t cap = 0;
    uint32_t count = 0;
    int st = ST_OK;
    *more = 0;
    for (int s = has_cursor ? cursor[0] : 0; s < 256 && !*more; s++) {
        int dfd = openat(g_shardfd[s], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
        if (!d) {
            int e = errno;
            if (dfd >= 0)
                close(dfd);
            snprintf(msg, MSG_LEN, "list shard %02x: %s", s, strerror(e));
            st = ST_IO_ERROR;
            break;
        }
        size_t k = 0;
        struct dirent *de;
        uint8_t id[ID_LEN];
        while ((de = readdir(d)) != NULL) {
            if (chunk_name_to_id(de->d_name, s, id) < 0)
                continue;
            if (has_cursor && memcmp(id, cursor, ID_LEN) <= 0)
                continue;
            if (k == cap) {
                size_t ncap = cap ? cap * 2 : 1024;
                uint8_t *nids = realloc(ids, ncap * ID_LEN);
                if (!nids) {
                    closedir(d);
                    snprintf(msg, MSG_LEN, "out of memory");
                    st = ST_IO_ERROR;
                    goto out;
                }
                ids = nids;
                cap = ncap;
            }
            memcpy(ids + k * ID_LEN, id, ID_LEN);
            k++;
        }
        closedir(d);
        if (k > 1)
            qsort(ids, k, ID_LEN, cmp_id);
        for (size_t i = 0; i < k; i++) {
            char hex[33];
            id_to_hex(ids + i * ID_LEN, hex);
            struct stat sb;
            /* Deleted since readdir: "may or may not appear", so skip. */
            if (fstatat(g_shardfd[s], hex, &sb, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(sb.st_mode))
                continue;
            uint64_t len;
            /* A damaged file is still listed (a scrubber must find it); its
             * length is then only a best guess. */
            if (length_from_file_size((uint64_t)sb.st_size, &len) < 0)
                len = (uint64_t)sb.st_size > FOOTER_LEN ? (uint64_t)sb.st_size - FOOTER_LEN : 0;
            uint8_t *e = out + (size_t)count * LIST_ENTRY;
            memcpy(e, ids + i * ID_LEN, ID_LEN);
            put_be64(e + ID_LEN, len);
            if (++count == max) {
                *more = (i + 1 < k) || s < 255;
                break;
            }
        }
    }
out:
    free(ids);
    *n = count;
    return st;
}
