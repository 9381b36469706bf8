/* Listeners and the per-connection protocol engine.
 *
 * One detached thread per connection, blocking I/O. A slow disk (write, fsync)
 * therefore stalls only the connection that asked for it, and the code reads
 * top to bottom. A connection handles its frames strictly in arrival order, so
 * the only requests that stay in flight across frames are PUT streams; those
 * live in a small per-connection table keyed by request id.
 *
 * Memory per connection is bounded and independent of chunk size: one payload
 * buffer of max_frame bytes (also reused to build large responses), small
 * read/write buffers, and, once the connection first reads a chunk, a buffer
 * of up to 16 blocks. PUT data is written through to the temporary file as it
 * arrives, with each 64 KiB block's CRC32C computed incrementally and written
 * right after it, so a block may straddle any number of PUT_DATA frames.
 *
 * Small responses are collected in a write buffer and flushed before the thread
 * would block on the socket or the disk: a pipelining client gets one segment
 * for many answers, and no answer waits behind another request's fsync. */
#define _GNU_SOURCE
#include "net.h"

#include "agent.h"
#include "crc.h"
#include "proto.h"
#include "store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define THREAD_STACK (256 * 1024)
/* Active PUT streams are capped at MAX_ACTIVE_STREAMS (BUSY beyond); streams
 * that failed early only cost a table entry until their PUT_END/PUT_ABORT, but
 * even those are bounded so a client cannot grow the table without limit. */
#define MAX_STREAM_ENTRIES 1024
/* Read batch for GET / STAT verify, in blocks. */
#define MAX_IO_BLOCKS 16
#define LINGER_MS 1000
#define LINGER_BYTES (4u << 20)

struct stream {
    uint64_t req;
    uint8_t id[ID_LEN];
    int active; /* 0: failed early, frames are discarded until PUT_END/ABORT */
    int fd;
    uint64_t received;
    uint64_t reserved; /* capacity held for this file, = stored_size(received) */
    uint32_t crc;      /* of all data so far */
    uint32_t bcrc;     /* of the current partial block */
    uint32_t bfill;    /* bytes in the current partial block */
    uint64_t flushed;  /* file bytes whose writeback was started (sync_file_range) */
    uint8_t *stage;    /* direct writes: the file's next STAGE_SIZE bytes, NULL when written through writev */
    uint32_t sfill;    /* bytes in stage */
    uint64_t foff;     /* file offset of stage[0] */
    int direct;        /* the file is open with O_DIRECT (from the first full stage on) */
    int staged;        /* decided at the first PUT_DATA: 1 staged, -1 writev */
    char tmpname[96];
};

/* Direct writes: a chunk's file bytes (data blocks, their CRCs, the footer) are gathered in a page-aligned buffer
 * of STAGE_SIZE per stream; once a chunk fills it, its file is switched to O_DIRECT and each full buffer goes from
 * there to the disk without a copy into the page cache (on this machine class that copy was most of the agent's
 * CPU per PUT). The last piece is padded to STAGE_ALIGN and the file cut back to its size; durability is still the
 * fsync at PUT_END. A chunk smaller than the buffer is written whole at PUT_END through the page cache, and one
 * whose first PUT_DATA frame is under a block is not staged at all (writev, as small chunks always were). At most
 * STAGE_MAX buffers exist at once (STAGE_MAX MiB); a stream that finds none, or a file system that refuses
 * O_DIRECT, writes through the page cache as before. --no-direct turns it off. */
#define STAGE_SIZE (1u << 20)
#define STAGE_ALIGN 4096u
#define STAGE_MAX 64
#define STAGE_FIRST BLOCK_SIZE /* the least first PUT_DATA frame for which a stream is staged */
static atomic_int g_stages;

/* Writeback of a chunk's file is started every FLUSH_STEP bytes as its data arrives, so that the fsync at
 * PUT_END finds little left to write: the stream's end waits for the last step, not for the whole chunk. */
#define FLUSH_STEP (1u << 20)

struct conn {
    int fd;
    uint64_t cid;
    char peer[80];
    int hello_done;
    int dead;   /* a send failed: the peer is gone, stop writing */
    int linger; /* closing after a fatal error: let the client read it */
    const char *reason;
    char detail[MSG_LEN];
    uint64_t frames;

    uint8_t *frame; /* max_frame bytes */

    size_t rpos, rlen;
    size_t wlen;
    uint8_t rbuf[16384];
    uint8_t wbuf[8192];

    struct iovec *piov; /* PUT_DATA: data pieces interleaved with block CRCs */
    uint8_t *pcrc;

    uint8_t *iobuf; /* GET / STAT: whole blocks with their CRCs */
    uint32_t io_blocks;
    struct iovec *giov;
    struct iovec *segs;

    struct stream *streams;
    int nstreams, cap_streams, nactive;
};

static atomic_uint g_nconn;
static atomic_uint_fast64_t g_next_cid;
static pthread_attr_t g_thread_attr;

/* ---------------------------------------------------------------- output */

/* Skip the first n bytes of an iovec array after a short writev: whole entries, then part of the next. */
static void iov_advance(struct iovec **iov, int *cnt, size_t n)
{
    while (*cnt > 0 && n >= (*iov)->iov_len) {
        n -= (*iov)->iov_len;
        (*iov)++;
        (*cnt)--;
    }
    if (*cnt > 0) {
        (*iov)->iov_base = (uint8_t *)(*iov)->iov_base + n;
        (*iov)->iov_len -= n;
    }
}

static int send_all(struct conn *c, struct iovec *iov, int cnt)
{
    if (c->dead)
        return -1;
    while (cnt > 0) {
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)(cnt > IOV_MAX ? IOV_MAX : cnt)};
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            /* EAGAIN here means SO_SNDTIMEO expired: the client has not read
             * its responses for io-timeout. */
            c->reason = (errno == EAGAIN || errno == EWOULDBLOCK) ? "send-timeout" : "send-error";
            snprintf(c->detail, sizeof c->detail, "%s", strerror(errno));
            c->dead = 1;
            return -1;
        }
        iov_advance(&iov, &cnt, (size_t)w);
    }
    return 0;
}

static int out_flush(struct conn *c)
{
    if (c->wlen == 0)
        return c->dead ? -1 : 0;
    struct iovec iov = {c->wbuf, c->wlen};
    c->wlen = 0;
    return send_all(c, &iov, 1);
}

static void make_header(uint8_t *h, uint32_t len, uint8_t op, uint64_t req)
{
    put_be32(h, len);
    h[4] = op;
    h[5] = 0;
    h[6] = h[7] = 0;
    put_be64(h + 8, req);
}

static int out_frame(struct conn *c, uint8_t op, uint64_t req, const void *a, size_t alen, const void *b,
                     size_t blen)
{
    if (c->dead)
        return -1;
    size_t total = FRAME_HDR + alen + blen;
    if (total > sizeof c->wbuf - c->wlen && out_flush(c) < 0)
        return -1;
    if (total <= sizeof c->wbuf - c->wlen) {
        uint8_t *p = c->wbuf + c->wlen;
        make_header(p, (uint32_t)(alen + blen), op, req);
        if (alen)
            memcpy(p + FRAME_HDR, a, alen);
        if (blen)
            memcpy(p + FRAME_HDR + alen, b, blen);
        c->wlen += total;
        return 0;
    }
    uint8_t h[FRAME_HDR];
    make_header(h, (uint32_t)(alen + blen), op, req);
    struct iovec iov[3] = {{h, FRAME_HDR}, {(void *)a, alen}, {(void *)b, blen}};
    return send_all(c, iov, 3);
}

static int send_result(struct conn *c, uint64_t req, const void *body, size_t len)
{
    uint8_t st[2] = {0, 0};
    return out_frame(c, OP_RESULT, req, st, 2, body, len);
}

static int send_error(struct conn *c, uint64_t req, int status, const char *msg)
{
    uint8_t st[2];
    put_be16(st, (uint16_t)status);
    size_t len = strlen(msg);
    if (len > g_cfg.max_frame - 2)
        len = g_cfg.max_frame - 2;
    /* Server-side trouble is worth a line; client mistakes and routine answers
     * (NOT_FOUND, EXISTS...) are not, unless --verbose. */
    enum log_level lvl = (status == ST_IO_ERROR || status == ST_CORRUPT || status == ST_NO_SPACE) ? LOG_WARN
                                                                                                    : LOG_DEBUG;
    log_msg(lvl, "request failed conn=%" PRIu64 " req=%" PRIu64 " status=%s msg=\"%s\"", c->cid, req,
            status_name(status), msg);
    return out_frame(c, OP_RESULT, req, st, 2, msg, len);
}

/* Answers and marks the connection for closing; framing or state is lost. */
static int fatal(struct conn *c, uint64_t req, int status, const char *msg)
{
    send_error(c, req, status, msg);
    c->reason = status_name(status);
    snprintf(c->detail, sizeof c->detail, "%s", msg);
    c->linger = 1;
    return -1;
}

/* DATA frames of at most max_frame bytes covering segs in order. */
static int send_data(struct conn *c, uint64_t req, const struct iovec *segs, int nseg)
{
    if (out_flush(c) < 0)
        return -1;
    int i = 0;
    size_t off = 0;
    while (i < nseg) {
        uint8_t h[FRAME_HDR];
        int k = 1;
        size_t fl = 0;
        c->giov[0].iov_base = h;
        c->giov[0].iov_len = FRAME_HDR;
        while (i < nseg && fl < g_cfg.max_frame && k < (int)c->io_blocks + 2) {
            size_t take = segs[i].iov_len - off;
            if (take > g_cfg.max_frame - fl)
                take = g_cfg.max_frame - fl;
            if (take) {
                c->giov[k].iov_base = (uint8_t *)segs[i].iov_base + off;
                c->giov[k].iov_len = take;
                k++;
                fl += take;
                off += take;
            }
            if (off == segs[i].iov_len) {
                i++;
                off = 0;
            }
        }
        if (fl == 0)
            break;
        make_header(h, (uint32_t)fl, OP_DATA, req);
        if (k > 1 && crash_armed("get-mid-frame")) {
            /* Fault injection for tests: the agent dies having sent half of a DATA frame. */
            c->giov[1].iov_len = (c->giov[1].iov_len + 1) / 2;
            send_all(c, c->giov, 2);
            crash_point("get-mid-frame");
        }
        if (send_all(c, c->giov, k) < 0)
            return -1;
    }
    return 0;
}

/* ----------------------------------------------------------------- input */

/* recv() that first drains what is already there; only when it would block does
 * it flush pending answers and wait, with the io-timeout only mid-frame. */
static ssize_t conn_recv(struct conn *c, void *buf, size_t len, int mid_frame)
{
    for (;;) {
        ssize_t r = recv(c->fd, buf, len, MSG_DONTWAIT);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            c->reason = "recv-error";
            snprintf(c->detail, sizeof c->detail, "%s", strerror(errno));
            return -1;
        }
        if (out_flush(c) < 0)
            return -1;
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, mid_frame ? g_cfg.io_timeout_ms : -1);
        if (pr == 0) {
            c->reason = "timeout";
            snprintf(c->detail, sizeof c->detail, "stalled mid-frame");
            return -1;
        }
        if (pr < 0 && errno != EINTR) {
            c->reason = "poll-error";
            snprintf(c->detail, sizeof c->detail, "%s", strerror(errno));
            return -1;
        }
    }
}

/* 0: got n bytes; 1: clean EOF before the first byte of a frame; -1: error or
 * EOF mid-frame (reason set). *started tracks whether the frame has begun. */
static int in_read(struct conn *c, void *dst, size_t n, int *started)
{
    uint8_t *d = dst;
    size_t got = 0;
    while (got < n) {
        if (c->rpos < c->rlen) {
            size_t take = c->rlen - c->rpos;
            if (take > n - got)
                take = n - got;
            memcpy(d + got, c->rbuf + c->rpos, take);
            c->rpos += take;
            got += take;
            *started = 1;
            continue;
        }
        ssize_t r;
        size_t need = n - got;
        if (need >= sizeof c->rbuf) {
            /* big payloads bypass the buffer */
            r = conn_recv(c, d + got, need, *started);
            if (r > 0) {
                got += (size_t)r;
                *started = 1;
            }
        } else {
            r = conn_recv(c, c->rbuf, sizeof c->rbuf, *started);
            c->rpos = 0;
            c->rlen = r > 0 ? (size_t)r : 0;
        }
        if (r < 0)
            return -1;
        if (r == 0) {
            if (!*started) {
                c->reason = "eof";
                return 1;
            }
            c->reason = "eof-mid-frame";
            return -1;
        }
    }
    return 0;
}

/* --------------------------------------------------------------- streams */

static struct stream *find_stream(struct conn *c, uint64_t req)
{
    for (int i = 0; i < c->nstreams; i++)
        if (c->streams[i].req == req)
            return &c->streams[i];
    return NULL;
}

static void stage_free(struct stream *s);

/* Drops the temporary file and the capacity of an active stream; the entry
 * itself stays (in discard state) until its PUT_END/PUT_ABORT. */
static void stream_release(struct conn *c, struct stream *s)
{
    stage_free(s);
    if (!s->active)
        return;
    store_tmp_discard(s->fd, s->tmpname);
    store_unreserve(s->reserved);
    s->fd = -1;
    s->reserved = 0;
    s->active = 0;
    c->nactive--;
}

static void stream_remove(struct conn *c, struct stream *s)
{
    stream_release(c, s);
    *s = c->streams[--c->nstreams];
}

/* An early failure: the one RESULT of this request is sent now. */
static int stream_fail(struct conn *c, struct stream *s, int status, const char *msg)
{
    stream_release(c, s);
    return send_error(c, s->req, status, msg);
}

static int write_full(int fd, struct iovec *iov, int cnt)
{
    while (cnt > 0) {
        ssize_t w = writev(fd, iov, cnt > IOV_MAX ? IOV_MAX : cnt);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -EIO;
        iov_advance(&iov, &cnt, (size_t)w);
    }
    return 0;
}

/* Idle staging buffers are kept (at most STAGE_IDLE) rather than unmapped and mapped again per chunk. */
#define STAGE_IDLE 8
static pthread_mutex_t g_stage_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *g_stage_idle[STAGE_IDLE];
static int g_nstage_idle;

static void stage_free(struct stream *s)
{
    if (!s->stage)
        return;
    pthread_mutex_lock(&g_stage_lock);
    if (g_nstage_idle < STAGE_IDLE) {
        g_stage_idle[g_nstage_idle++] = s->stage;
        s->stage = NULL;
    }
    pthread_mutex_unlock(&g_stage_lock);
    if (s->stage)
        munmap(s->stage, STAGE_SIZE);
    s->stage = NULL;
    atomic_fetch_sub(&g_stages, 1);
}

/* A staging buffer for the stream; 0 if there is none to be had (the stream then writes through writev). */
static int stage_take(struct stream *s)
{
    if (g_cfg.no_direct)
        return 0;
    if (atomic_fetch_add(&g_stages, 1) >= STAGE_MAX) {
        atomic_fetch_sub(&g_stages, 1);
        return 0;
    }
    void *buf = NULL;
    pthread_mutex_lock(&g_stage_lock);
    if (g_nstage_idle > 0)
        buf = g_stage_idle[--g_nstage_idle];
    pthread_mutex_unlock(&g_stage_lock);
    if (!buf) {
        buf = mmap(NULL, STAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (buf == MAP_FAILED) {
            atomic_fetch_sub(&g_stages, 1);
            return 0;
        }
    }
    s->stage = buf;
    s->sfill = 0;
    s->foff = 0;
    s->direct = 0;
    return 1;
}

/* Writes stage[0, len) at foff. A direct write the file system refuses (EINVAL: an alignment it wants larger)
 * is done again through the page cache, and the stream stays there. */
static int stage_flush(struct stream *s, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t w = pwrite(s->fd, s->stage + done, len - done, (off_t)(s->foff + done));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EINVAL && s->direct) {
                int fl = fcntl(s->fd, F_GETFL);
                if (fl >= 0 && fcntl(s->fd, F_SETFL, fl & ~O_DIRECT) == 0) {
                    s->direct = 0;
                    continue;
                }
            }
            return -errno;
        }
        if (w == 0)
            return -EIO;
        done += (size_t)w;
    }
    /* Through the page cache (a file system without O_DIRECT): start the writeback now, as writev's path does. */
    if (!s->direct && sync_file_range(s->fd, (off_t)s->foff, (off_t)len, SYNC_FILE_RANGE_WRITE) < 0)
        log_msg(LOG_DEBUG, "sync_file_range failed err=\"%s\"", strerror(errno));
    s->foff += len;
    s->sfill = 0;
    return 0;
}

static int stage_put(struct stream *s, const uint8_t *p, size_t n)
{
    while (n > 0) {
        size_t take = STAGE_SIZE - s->sfill;
        if (take > n)
            take = n;
        memcpy(s->stage + s->sfill, p, take);
        s->sfill += (uint32_t)take;
        p += take;
        n -= take;
        if (s->sfill == STAGE_SIZE) {
            if (s->foff == 0) {
                /* A chunk of a MiB or more: O_DIRECT from here on, where the file system takes it. A smaller one
                 * is written at PUT_END through the page cache, in one write: direct I/O would only make its
                 * write wait for the disk, with little copying to save. */
                int fl = fcntl(s->fd, F_GETFL);
                s->direct = fl >= 0 && fcntl(s->fd, F_SETFL, fl | O_DIRECT) == 0;
            }
            int e = stage_flush(s, STAGE_SIZE);
            if (e < 0)
                return e;
        }
    }
    return 0;
}

/* The stage's last bytes: padded to STAGE_ALIGN for a direct write, then the file cut back to its size. */
static int stage_finish(struct stream *s)
{
    size_t real = s->sfill, len = real;
    if (s->direct && real % STAGE_ALIGN) {
        size_t pad = STAGE_ALIGN - real % STAGE_ALIGN;
        memset(s->stage + real, 0, pad);
        len += pad;
    }
    uint64_t size = s->foff + real;
    int e = len ? stage_flush(s, len) : 0;
    if (e < 0)
        return e;
    if (len != real && ftruncate(s->fd, (off_t)size) < 0)
        return -errno;
    return 0;
}

static int do_put_begin(struct conn *c, uint64_t req, const uint8_t *p, uint32_t len)
{
    char msg[MSG_LEN];
    if (c->nstreams == MAX_STREAM_ENTRIES)
        return fatal(c, req, ST_PROTOCOL, "too many PUT streams in flight on this connection");
    if (c->nstreams == c->cap_streams) {
        int ncap = c->cap_streams ? c->cap_streams * 2 : 8;
        struct stream *ns = realloc(c->streams, (size_t)ncap * sizeof *ns);
        if (!ns)
            return fatal(c, req, ST_BUSY, "out of memory");
        c->streams = ns;
        c->cap_streams = ncap;
    }
    /* The entry exists from here on, even if the PUT fails at once: its
     * remaining frames must be recognised and discarded. */
    struct stream *s = &c->streams[c->nstreams++];
    memset(s, 0, sizeof *s);
    s->req = req;
    s->fd = -1;

    if (len != ID_LEN)
        return send_error(c, req, ST_BAD_REQUEST, "PUT_BEGIN payload must be a 16-byte id");
    memcpy(s->id, p, ID_LEN);
    if (c->nactive >= MAX_ACTIVE_STREAMS)
        return send_error(c, req, ST_BUSY, "too many open PUT streams on this connection");
    int st = store_check_absent(s->id, msg);
    if (st != ST_OK)
        return send_error(c, req, st, msg);
    if (store_reserve(FOOTER_LEN) != ST_OK)
        return send_error(c, req, ST_NO_SPACE, "capacity exceeded");
    st = store_tmp_create(req, s->tmpname, &s->fd, msg);
    if (st != ST_OK) {
        store_unreserve(FOOTER_LEN);
        return send_error(c, req, st, msg);
    }
    s->reserved = FOOTER_LEN;
    s->active = 1;
    c->nactive++;
    return 0;
}

static int do_put_data(struct conn *c, struct stream *s, const uint8_t *p, uint32_t len)
{
    char msg[MSG_LEN];
    if (!s->active)
        return 0;
    if (len == 0)
        return stream_fail(c, s, ST_BAD_REQUEST, "empty PUT_DATA");
    if (s->received + len > g_cfg.max_chunk) {
        snprintf(msg, sizeof msg, "chunk exceeds max_chunk (%" PRIu64 " bytes)", g_cfg.max_chunk);
        return stream_fail(c, s, ST_TOO_LARGE, msg);
    }
    /* The final length is only known at PUT_END, so capacity is claimed as the
     * data arrives and the frame that crosses the limit fails. */
    uint64_t need = stored_size(s->received + len);
    if (need > s->reserved) {
        if (store_reserve(need - s->reserved) != ST_OK)
            return stream_fail(c, s, ST_NO_SPACE, "capacity exceeded");
        s->reserved = need;
    }

    if (s->staged == 0) /* a chunk whose first frame is under a block is most likely small: writev it */
        s->staged = len >= STAGE_FIRST && stage_take(s) ? 1 : -1;
    int staged = s->staged > 0, k = 0, nc = 0, e = 0;
    /* Each block's data, then its CRC once the block is whole: into the staging buffer, or an iovec for writev. */
    while (len > 0 && e == 0) {
        uint32_t take = BLOCK_SIZE - s->bfill;
        if (take > len)
            take = len;
        s->bcrc = crc32c(s->bcrc, p, take);
        s->crc = crc32c(s->crc, p, take);
        if (staged) {
            e = stage_put(s, p, take);
        } else {
            c->piov[k].iov_base = (void *)p;
            c->piov[k].iov_len = take;
            k++;
        }
        s->bfill += take;
        p += take;
        len -= take;
        s->received += take;
        if (s->bfill == BLOCK_SIZE) {
            uint8_t *cp = c->pcrc + 4 * nc++;
            put_be32(cp, s->bcrc);
            if (staged) {
                if (e == 0)
                    e = stage_put(s, cp, BLOCK_CRC);
            } else {
                c->piov[k].iov_base = cp;
                c->piov[k].iov_len = BLOCK_CRC;
                k++;
            }
            s->bcrc = 0;
            s->bfill = 0;
        }
    }
    if (!staged)
        e = write_full(s->fd, c->piov, k);
    if (e < 0) {
        snprintf(msg, sizeof msg, "write: %s", strerror(-e));
        return stream_fail(c, s, errno_status(-e), msg);
    }
    if (staged)
        return 0; /* stage_flush starts its own writeback where it has to */
    uint64_t written = s->received + BLOCK_CRC * (s->received / BLOCK_SIZE);
    if (written - s->flushed >= FLUSH_STEP) {
        /* Only starts the writeback; durability is still the fsync's at PUT_END, which reports any error. */
        if (sync_file_range(s->fd, (off_t)s->flushed, (off_t)(written - s->flushed), SYNC_FILE_RANGE_WRITE) < 0)
            log_msg(LOG_DEBUG, "sync_file_range failed err=\"%s\"", strerror(errno));
        s->flushed = written;
    }
    return 0;
}

static int do_put_end(struct conn *c, struct stream *s, const uint8_t *p, uint32_t len)
{
    char msg[MSG_LEN];
    uint64_t req = s->req;
    if (!s->active) {
        stream_remove(c, s);
        return 0;
    }
    if (len != 13 || p[8] > 1) {
        stream_remove(c, s);
        return send_error(c, req, ST_BAD_REQUEST, "PUT_END payload must be u64 length, u8 has_crc (0/1), u32 crc32c");
    }
    uint64_t alen = get_be64(p);
    int has_crc = p[8];
    uint32_t acrc = get_be32(p + 9);
    if (alen != s->received) {
        snprintf(msg, sizeof msg, "length mismatch: announced %" PRIu64 ", received %" PRIu64, alen, s->received);
        stream_remove(c, s);
        return send_error(c, req, ST_CHECKSUM_MISMATCH, msg);
    }
    if (has_crc && acrc != s->crc) {
        snprintf(msg, sizeof msg, "crc32c mismatch: announced %08x, received %08x", acrc, s->crc);
        stream_remove(c, s);
        return send_error(c, req, ST_CHECKSUM_MISMATCH, msg);
    }

    uint8_t tail[BLOCK_CRC + FOOTER_LEN];
    size_t n = 0;
    if (s->bfill) {
        put_be32(tail, s->bcrc);
        n = BLOCK_CRC;
    }
    uint8_t *f = tail + n;
    memcpy(f, FOOTER_MAGIC, 8);
    put_be64(f + 8, s->received);
    put_be32(f + 16, BLOCK_SIZE);
    put_be32(f + 20, s->crc);
    put_be32(f + 24, 0);
    put_be32(f + 28, crc32c(0, f, 28));
    n += FOOTER_LEN;
    int e;
    if (s->staged > 0) {
        e = stage_put(s, tail, n);
        if (e == 0)
            e = stage_finish(s);
        stage_free(s);
    } else {
        struct iovec iov = {tail, n};
        e = write_full(s->fd, &iov, 1);
    }
    if (e < 0) {
        snprintf(msg, sizeof msg, "write: %s", strerror(-e));
        stream_remove(c, s);
        return send_error(c, req, errno_status(-e), msg);
    }

    /* Hand the file over to the store; the entry is gone from here on. */
    int fd = s->fd;
    uint64_t length = s->received, reservation = s->reserved;
    uint32_t crc = s->crc;
    uint8_t id[ID_LEN];
    char name[sizeof s->tmpname];
    memcpy(id, s->id, ID_LEN);
    memcpy(name, s->tmpname, sizeof name);
    s->active = 0;
    c->nactive--;
    stream_remove(c, s);

    /* Answers already computed must not wait for our fsyncs. */
    if (out_flush(c) < 0) {
        store_tmp_discard(fd, name);
        store_unreserve(reservation);
        return -1;
    }
    int st = store_commit(fd, name, id, stored_size(length), reservation, msg);
    if (st != ST_OK)
        return send_error(c, req, st, msg);
    if (g_cfg.verbose) {
        char hex[33];
        id_to_hex(id, hex);
        log_msg(LOG_DEBUG, "chunk stored conn=%" PRIu64 " req=%" PRIu64 " id=%s length=%" PRIu64, c->cid, req, hex,
                length);
    }
    uint8_t body[12];
    put_be64(body, length);
    put_be32(body + 8, crc);
    return send_result(c, req, body, sizeof body);
}

static int do_put_abort(struct conn *c, struct stream *s, uint64_t req, uint32_t len)
{
    if (!s) {
        /* Not in flight: its PUT already ended (a cancelled client racing its own
         * PUT_END). Any RESULT now could be mistaken for a later request that
         * reuses the id, so say nothing. */
        log_msg(LOG_DEBUG, "PUT_ABORT for no open stream ignored conn=%" PRIu64 " req=%" PRIu64, c->cid, req);
        return 0;
    }
    int was_active = s->active;
    stream_remove(c, s);
    if (!was_active)
        return 0;
    if (len != 0)
        return send_error(c, req, ST_BAD_REQUEST, "PUT_ABORT takes no payload (stream dropped)");
    return send_result(c, req, NULL, 0);
}

/* ------------------------------------------------------------- requests */

static int ensure_iobuf(struct conn *c)
{
    if (c->iobuf)
        return 0;
    uint32_t nb = g_cfg.max_frame / BLOCK_SIZE;
    if (nb < 1)
        nb = 1;
    if (nb > MAX_IO_BLOCKS)
        nb = MAX_IO_BLOCKS;
    void *iobuf = NULL;
    c->iobuf = posix_memalign(&iobuf, IO_ALIGN, store_iobuf_size(nb)) == 0 ? iobuf : NULL;
    c->giov = malloc(((size_t)nb + 2) * sizeof *c->giov);
    c->segs = malloc((size_t)nb * sizeof *c->segs);
    if (!c->iobuf || !c->giov || !c->segs) {
        free(c->iobuf);
        free(c->giov);
        free(c->segs);
        c->iobuf = NULL;
        c->giov = c->segs = NULL;
        return -1;
    }
    c->io_blocks = nb;
    return 0;
}

static int do_hello(struct conn *c, uint64_t req, const uint8_t *p, uint32_t len)
{
    if (len != 8 || memcmp(p, HELLO_MAGIC, 4) != 0)
        return fatal(c, req, ST_BAD_REQUEST, "HELLO payload must be \"TSOS\", u16 min_version, u16 max_version");
    uint16_t vmin = get_be16(p + 4), vmax = get_be16(p + 6);
    if (vmin > PROTO_VERSION || vmax < PROTO_VERSION) {
        char msg[MSG_LEN];
        snprintf(msg, sizeof msg, "no common protocol version: client %u..%u, agent %u..%u", vmin, vmax,
                 PROTO_VERSION, PROTO_VERSION);
        return fatal(c, req, ST_VERSION, msg);
    }
    uint8_t body[34];
    put_be16(body, PROTO_VERSION);
    memcpy(body + 2, store_agent_id(), ID_LEN);
    put_be32(body + 18, g_cfg.max_frame);
    put_be64(body + 22, g_cfg.max_chunk);
    put_be32(body + 30, BLOCK_SIZE);
    c->hello_done = 1;
    return send_result(c, req, body, sizeof body);
}

static int do_info(struct conn *c, uint64_t req, uint32_t len)
{
    if (len != 0)
        return send_error(c, req, ST_BAD_REQUEST, "INFO takes no payload");
    uint64_t capacity, used, chunks, fs_free;
    store_info(&capacity, &used, &chunks, &fs_free);
    uint8_t body[50];
    memcpy(body, store_agent_id(), ID_LEN);
    put_be16(body + 16, PROTO_VERSION);
    put_be64(body + 18, capacity);
    put_be64(body + 26, used);
    put_be64(body + 34, chunks);
    put_be64(body + 42, fs_free);
    return send_result(c, req, body, sizeof body);
}

static int do_get(struct conn *c, uint64_t req, const uint8_t *p, uint32_t len)
{
    char msg[MSG_LEN];
    if (len != 32)
        return send_error(c, req, ST_BAD_REQUEST, "GET payload must be id, u64 offset, u64 length");
    uint8_t id[ID_LEN];
    memcpy(id, p, ID_LEN);
    uint64_t off = get_be64(p + 16), glen = get_be64(p + 24);
    struct chunk ch;
    int st = store_open_chunk(id, &ch, msg);
    if (st != ST_OK)
        return send_error(c, req, st, msg);
    if (off > ch.length) {
        snprintf(msg, sizeof msg, "offset %" PRIu64 " beyond chunk length %" PRIu64, off, ch.length);
        store_close_chunk(&ch);
        return send_error(c, req, ST_RANGE, msg);
    }
    uint64_t end = glen > ch.length - off ? ch.length : off + glen;
    store_note_get(&ch, id, off, end);
    if (off < end && ensure_iobuf(c) < 0) {
        store_close_chunk(&ch);
        return send_error(c, req, ST_IO_ERROR, "out of memory");
    }
    uint64_t pos = off;
    while (pos < end) {
        uint64_t b0 = pos / BLOCK_SIZE, blast = (end - 1) / BLOCK_SIZE;
        uint32_t nb = blast - b0 + 1 > c->io_blocks ? c->io_blocks : (uint32_t)(blast - b0 + 1);
        /* Verify every block of the batch before sending any byte of it. */
        const uint8_t *blocks;
        st = store_read_blocks(&ch, b0, nb, c->iobuf, &blocks, msg);
        if (st != ST_OK) {
            char hex[33];
            id_to_hex(id, hex);
            char full[MSG_LEN];
            snprintf(full, sizeof full, "chunk %s: %.150s", hex, msg);
            store_close_chunk(&ch);
            return send_error(c, req, st, full);
        }
        for (uint32_t j = 0; j < nb; j++) {
            uint64_t bstart = (b0 + j) * BLOCK_SIZE;
            uint64_t bend = bstart + chunk_block_len(&ch, b0 + j);
            uint64_t s0 = pos > bstart ? pos : bstart;
            uint64_t s1 = end < bend ? end : bend;
            c->segs[j].iov_base = (uint8_t *)blocks + (size_t)j * (BLOCK_SIZE + BLOCK_CRC) + (s0 - bstart);
            c->segs[j].iov_len = (size_t)(s1 - s0);
        }
        if (send_data(c, req, c->segs, (int)nb) < 0) {
            store_close_chunk(&ch);
            return -1;
        }
        uint64_t next = (b0 + nb) * BLOCK_SIZE;
        pos = next < end ? next : end;
    }
    uint8_t body[12];
    put_be64(body, ch.length);
    put_be32(body + 8, ch.crc);
    store_close_chunk(&ch);
    return send_result(c, req, body, sizeof body);
}

static int do_stat(struct conn *c, uint64_t req, const uint8_t *p, uint32_t len)
{
    char msg[MSG_LEN];
    if (len != 17 || p[16] > 1)
        return send_error(c, req, ST_BAD_REQUEST, "STAT payload must be id, u8 verify (0/1)");
    uint8_t id[ID_LEN];
    memcpy(id, p, ID_LEN);
    int verify = p[16];
    struct chunk ch;
    int st = store_open_chunk(id, &ch, msg);
    if (st != ST_OK)
        return send_error(c, req, st, msg);
    if (verify && ch.nblocks > 0) {
        if (ensure_iobuf(c) < 0) {
            store_close_chunk(&ch);
            return send_error(c, req, ST_IO_ERROR, "out of memory");
        }
        uint32_t whole = 0;
        for (uint64_t b0 = 0; b0 < ch.nblocks; b0 += c->io_blocks) {
            uint32_t nb = ch.nblocks - b0 > c->io_blocks ? c->io_blocks : (uint32_t)(ch.nblocks - b0);
            const uint8_t *blocks;
            st = store_read_blocks(&ch, b0, nb, c->iobuf, &blocks, msg);
            if (st != ST_OK)
                break;
            for (uint32_t j = 0; j < nb; j++)
                whole = crc32c(whole, blocks + (size_t)j * (BLOCK_SIZE + BLOCK_CRC), chunk_block_len(&ch, b0 + j));
        }
        if (st == ST_OK && whole != ch.crc) {
            snprintf(msg, sizeof msg, "whole-chunk crc32c mismatch: footer %08x, data %08x", ch.crc, whole);
            st = ST_CORRUPT;
        }
        if (st != ST_OK) {
            char hex[33], full[MSG_LEN];
            id_to_hex(id, hex);
            snprintf(full, sizeof full, "chunk %s: %.150s", hex, msg);
            store_close_chunk(&ch);
            return send_error(c, req, st, full);
        }
    } else if (verify && ch.crc != 0) {
        /* An empty chunk has no blocks; its whole-chunk CRC must be that of
         * nothing. */
        store_close_chunk(&ch);
        return send_error(c, req, ST_CORRUPT, "empty chunk with non-zero crc32c");
    }
    uint8_t body[20];
    put_be64(body, ch.length);
    put_be32(body + 8, ch.crc);
    put_be64(body + 12, ch.mtime);
    store_close_chunk(&ch);
    return send_result(c, req, body, sizeof body);
}

static int do_delete(struct conn *c, uint64_t req, const uint8_t *p, uint32_t len)
{
    char msg[MSG_LEN];
    if (len != ID_LEN)
        return send_error(c, req, ST_BAD_REQUEST, "DELETE payload must be a 16-byte id");
    int st = store_delete(p, msg);
    if (st != ST_OK)
        return send_error(c, req, st, msg);
    if (g_cfg.verbose) {
        char hex[33];
        id_to_hex(p, hex);
        log_msg(LOG_DEBUG, "chunk deleted conn=%" PRIu64 " req=%" PRIu64 " id=%s", c->cid, req, hex);
    }
    return send_result(c, req, NULL, 0);
}

static int do_link(struct conn *c, uint64_t req, const uint8_t *p, uint32_t len)
{
    char msg[MSG_LEN];
    if (len != 2 * ID_LEN)
        return send_error(c, req, ST_BAD_REQUEST, "LINK payload must be the new id and the stored id (32 bytes)");
    uint64_t length;
    uint32_t crc;
    int st = store_link(p + ID_LEN, p, &length, &crc, msg);
    if (st != ST_OK)
        return send_error(c, req, st, msg);
    if (g_cfg.verbose) {
        char dst[33], src[33];
        id_to_hex(p, dst);
        id_to_hex(p + ID_LEN, src);
        log_msg(LOG_DEBUG, "chunk linked conn=%" PRIu64 " req=%" PRIu64 " id=%s from=%s", c->cid, req, dst, src);
    }
    uint8_t body[12];
    put_be64(body, length);
    put_be32(body + 8, crc);
    return send_result(c, req, body, sizeof body);
}

static int do_list(struct conn *c, uint64_t req, const uint8_t *p, uint32_t len)
{
    char msg[MSG_LEN];
    if (len != 21 || p[0] > 1)
        return send_error(c, req, ST_BAD_REQUEST, "LIST payload must be u8 has_cursor (0/1), cursor id, u32 max");
    uint32_t max = get_be32(p + 17);
    if (max == 0 || max > LIST_MAX)
        return send_error(c, req, ST_BAD_REQUEST, "LIST max must be 1..10000");
    int has_cursor = p[0];
    uint8_t cursor[ID_LEN];
    memcpy(cursor, p + 1, ID_LEN);
    /* The body is built in the payload buffer (the request is parsed), and must
     * fit one frame with its status, count and `more`: with a small max_frame
     * the page is shortened and `more` tells the client to go on. */
    uint32_t fit = (g_cfg.max_frame - 2 - 4 - 1) / LIST_ENTRY;
    if (max > fit)
        max = fit;
    uint32_t n = 0;
    int more = 0;
    int st = store_list(has_cursor, cursor, max, c->frame + 4, &n, &more, msg);
    if (st != ST_OK)
        return send_error(c, req, st, msg);
    put_be32(c->frame, n);
    c->frame[4 + (size_t)n * LIST_ENTRY] = (uint8_t)more;
    return send_result(c, req, c->frame, 4 + (size_t)n * LIST_ENTRY + 1);
}

static const char *op_name(uint8_t op)
{
    switch (op) {
    case OP_HELLO: return "HELLO";
    case OP_PING: return "PING";
    case OP_INFO: return "INFO";
    case OP_PUT_BEGIN: return "PUT_BEGIN";
    case OP_PUT_DATA: return "PUT_DATA";
    case OP_PUT_END: return "PUT_END";
    case OP_PUT_ABORT: return "PUT_ABORT";
    case OP_GET: return "GET";
    case OP_DELETE: return "DELETE";
    case OP_STAT: return "STAT";
    case OP_LINK: return "LINK";
    case OP_LIST: return "LIST";
    default: return "?";
    }
}

static int handle_frame(struct conn *c, uint8_t op, uint64_t req, const uint8_t *p, uint32_t len)
{
    if (op != OP_PUT_DATA)
        log_msg(LOG_DEBUG, "request conn=%" PRIu64 " op=%s(0x%02x) req=%" PRIu64 " len=%u", c->cid, op_name(op), op,
                req, len);
    if (!c->hello_done) {
        if (op != OP_HELLO)
            return fatal(c, req, ST_PROTOCOL, "first frame must be HELLO");
        return do_hello(c, req, p, len);
    }

    struct stream *s = find_stream(c, req);
    switch (op) {
    case OP_PUT_DATA:
        if (!s)
            return fatal(c, req, ST_PROTOCOL, "PUT_DATA for no open PUT stream");
        return do_put_data(c, s, p, len);
    case OP_PUT_END:
        if (!s)
            return fatal(c, req, ST_PROTOCOL, "PUT_END for no open PUT stream");
        return do_put_end(c, s, p, len);
    case OP_PUT_ABORT:
        return do_put_abort(c, s, req, len);
    }
    /* Any other frame starts a new request; its id must not be in flight. */
    if (s)
        return fatal(c, req, ST_PROTOCOL, "request id already in flight");

    switch (op) {
    case OP_HELLO:
        return fatal(c, req, ST_PROTOCOL, "second HELLO on a connection");
    case OP_PING:
        if (len != 0)
            return send_error(c, req, ST_BAD_REQUEST, "PING takes no payload");
        return send_result(c, req, NULL, 0);
    case OP_INFO:
        return do_info(c, req, len);
    case OP_PUT_BEGIN:
        return do_put_begin(c, req, p, len);
    case OP_GET:
        return do_get(c, req, p, len);
    case OP_DELETE:
        return do_delete(c, req, p, len);
    case OP_STAT:
        return do_stat(c, req, p, len);
    case OP_LINK:
        return do_link(c, req, p, len);
    case OP_LIST:
        return do_list(c, req, p, len);
    default: {
        char msg[64];
        snprintf(msg, sizeof msg, "unknown op 0x%02x", op);
        return send_error(c, req, ST_UNKNOWN_OP, msg);
    }
    }
}

/* ------------------------------------------------------------ connection */

static void conn_loop(struct conn *c)
{
    uint8_t h[FRAME_HDR];
    for (;;) {
        int started = 0;
        int r = in_read(c, h, FRAME_HDR, &started);
        if (r != 0)
            break;
        uint32_t len = get_be32(h);
        uint8_t op = h[4];
        uint16_t reserved = get_be16(h + 6);
        uint64_t req = get_be64(h + 8);
        /* flags (h[5]) are defined by no op of version 1 and are ignored. */
        if (len > g_cfg.max_frame || reserved != 0) {
            char msg[MSG_LEN];
            if (reserved)
                snprintf(msg, sizeof msg, "reserved header field is 0x%04x, must be 0", reserved);
            else
                snprintf(msg, sizeof msg, "frame length %u exceeds max_frame %u", len, g_cfg.max_frame);
            fatal(c, req, ST_BAD_FRAME, msg);
            break;
        }
        if (len > 0 && in_read(c, c->frame, len, &started) != 0)
            break;
        c->frames++;
        if (handle_frame(c, op, req, c->frame, len) < 0)
            break;
    }
    /* A client that half-closed after its last request still gets the answers. */
    out_flush(c);
}

/* After a fatal error the agent has sent its RESULT; closing with unread input
 * would make the kernel reset the connection and could destroy that RESULT
 * before the client reads it. So stop writing, and swallow input briefly. */
static void linger_close(struct conn *c)
{
    shutdown(c->fd, SHUT_WR);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t total = 0;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (ms >= LINGER_MS || total >= LINGER_BYTES)
            break;
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(LINGER_MS - ms)) <= 0)
            break;
        ssize_t r = recv(c->fd, c->rbuf, sizeof c->rbuf, MSG_DONTWAIT);
        if (r <= 0 && !(r < 0 && errno == EINTR))
            break;
        if (r > 0)
            total += (size_t)r;
    }
}

static void conn_free(struct conn *c)
{
    free(c->frame);
    free(c->piov);
    free(c->pcrc);
    free(c->iobuf);
    free(c->giov);
    free(c->segs);
    free(c->streams);
    free(c);
}

static void *conn_thread(void *arg)
{
    struct conn *c = arg;
    /* Blocks a PUT_DATA payload can touch: a partial one at each end. */
    int nblk = (int)(g_cfg.max_frame / BLOCK_SIZE) + 2;
    c->frame = malloc(g_cfg.max_frame);
    c->piov = malloc((size_t)(2 * nblk + 2) * sizeof *c->piov);
    c->pcrc = malloc((size_t)nblk * BLOCK_CRC);
    if (!c->frame || !c->piov || !c->pcrc) {
        c->reason = "out-of-memory";
    } else {
        conn_loop(c);
    }
    /* Streams first: the client may already have seen our close. */
    int open_puts = c->nactive;
    while (c->nstreams > 0)
        stream_remove(c, &c->streams[c->nstreams - 1]);
    if (c->linger && !c->dead)
        linger_close(c);

    int normal = c->reason && strcmp(c->reason, "eof") == 0 && open_puts == 0;
    log_msg(normal ? LOG_DEBUG : LOG_INFO,
            "connection closed conn=%" PRIu64 " peer=%s reason=%s frames=%" PRIu64 " open_puts=%d%s%s%s", c->cid,
            c->peer, c->reason ? c->reason : "?", c->frames, open_puts, c->detail[0] ? " detail=\"" : "", c->detail,
            c->detail[0] ? "\"" : "");
    close(c->fd);
    conn_free(c);
    atomic_fetch_sub(&g_nconn, 1);
    return NULL;
}

/* -------------------------------------------------------------- listeners */

int net_listen_tcp(const char *host, const char *port, char *bound, size_t boundlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        log_msg(LOG_ERROR, "cannot resolve listen address host=\"%s\" port=%s err=\"%s\"", host, port,
                gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 4096) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        log_msg(LOG_ERROR, "cannot listen host=\"%s\" port=%s err=\"%s\"", host, port, strerror(err));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char h[NI_MAXHOST], p[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0 ||
        getnameinfo((struct sockaddr *)&ss, sl, h, sizeof h, p, sizeof p, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        log_msg(LOG_ERROR, "cannot read bound address err=\"%s\"", strerror(errno));
        close(fd);
        return -1;
    }
    if (ss.ss_family == AF_INET6)
        snprintf(bound, boundlen, "[%s]:%s", h, p);
    else
        snprintf(bound, boundlen, "%s:%s", h, p);
    return fd;
}

int net_listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        log_msg(LOG_ERROR, "unix socket path too long path=\"%s\"", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    /* A socket file left by an earlier run would make bind() fail; anything
     * that is not a socket is not ours to remove. */
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            log_msg(LOG_ERROR, "unix socket path exists and is not a socket path=\"%s\"", path);
            return -1;
        }
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 4096) < 0) {
        log_msg(LOG_ERROR, "cannot listen on unix socket path=\"%s\" err=\"%s\"", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static void peer_name(int fd, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char h[NI_MAXHOST], p[NI_MAXSERV];
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
        snprintf(out, outlen, "?");
    } else if (ss.ss_family == AF_UNIX) {
        snprintf(out, outlen, "unix");
    } else if (getnameinfo((struct sockaddr *)&ss, sl, h, sizeof h, p, sizeof p, NI_NUMERICHOST | NI_NUMERICSERV) ==
               0) {
        snprintf(out, outlen, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", h, p);
    } else {
        snprintf(out, outlen, "?");
    }
}

static void accept_one(int lfd, int is_tcp)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            log_msg(LOG_WARN, "accept failed err=\"%s\"", strerror(errno));
            /* The pending connection stays queued; back off instead of spinning. */
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        return;
    }
    uint64_t cid = atomic_fetch_add(&g_next_cid, 1) + 1;
    if (atomic_load(&g_nconn) >= g_cfg.max_connections) {
        char peer[80];
        peer_name(fd, peer, sizeof peer);
        log_msg(LOG_WARN, "connection refused conn=%" PRIu64 " peer=%s reason=max-connections limit=%u", cid, peer,
                g_cfg.max_connections);
        close(fd);
        return;
    }
    int one = 1;
    if (is_tcp) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    }
    if (g_cfg.io_timeout_ms > 0) {
        struct timeval tv = {.tv_sec = g_cfg.io_timeout_ms / 1000, .tv_usec = (g_cfg.io_timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        log_msg(LOG_WARN, "connection refused conn=%" PRIu64 " reason=out-of-memory", cid);
        close(fd);
        return;
    }
    c->fd = fd;
    c->cid = cid;
    peer_name(fd, c->peer, sizeof c->peer);
    atomic_fetch_add(&g_nconn, 1);
    pthread_t th;
    int rc = pthread_create(&th, &g_thread_attr, conn_thread, c);
    if (rc != 0) {
        log_msg(LOG_WARN, "connection refused conn=%" PRIu64 " peer=%s reason=thread-create err=\"%s\"", cid, c->peer,
                strerror(rc));
        atomic_fetch_sub(&g_nconn, 1);
        close(fd);
        free(c);
        return;
    }
    log_msg(LOG_DEBUG, "connection opened conn=%" PRIu64 " peer=%s", cid, c->peer);
}

const char *net_serve(int tcpfd, int unixfd, int sigfd, int parent_fd)
{
    pthread_attr_init(&g_thread_attr);
    pthread_attr_setdetachstate(&g_thread_attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&g_thread_attr, THREAD_STACK);

    struct pollfd pfd[4];
    int n = 0, itcp = -1, iunix = -1, iparent = -1;
    pfd[n] = (struct pollfd){.fd = sigfd, .events = POLLIN};
    n++;
    if (tcpfd >= 0) {
        itcp = n;
        pfd[n++] = (struct pollfd){.fd = tcpfd, .events = POLLIN};
    }
    if (unixfd >= 0) {
        iunix = n;
        pfd[n++] = (struct pollfd){.fd = unixfd, .events = POLLIN};
    }
    if (parent_fd >= 0) {
        iparent = n;
        pfd[n++] = (struct pollfd){.fd = parent_fd, .events = POLLIN};
    }
    for (;;) {
        int r = poll(pfd, (nfds_t)n, -1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            log_msg(LOG_ERROR, "poll failed err=\"%s\"", strerror(errno));
            return "poll-error";
        }
        if (pfd[0].revents)
            return "signal";
        if (iparent >= 0 && pfd[iparent].revents) {
            /* The supervisor never writes; anything it might is drained. End-of-file (or an error) means the
             * last holder of the write end is gone. */
            char buf[256];
            ssize_t got = read(parent_fd, buf, sizeof buf);
            if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN))
                return "supervisor-gone";
        }
        if (itcp >= 0 && pfd[itcp].revents)
            accept_one(tcpfd, 1);
        if (iunix >= 0 && pfd[iunix].revents)
            accept_one(unixfd, 0);
    }
}
