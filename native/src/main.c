/* trio-sos-agent: the storage agent of trio_sos (docs/agent-protocol.md).
 *
 * Layout of the sources:
 *   main.c   options, start-up, signals
 *   net.c    listeners, thread-per-connection protocol engine (design notes there)
 *   store.c  chunk files: layout, durability, space accounting, LIST
 *   crc.c    CRC32C on top of isa-l
 *   log.c    one-line structured log to stderr
 *
 * Shutdown is deliberately abrupt: on SIGTERM/SIGINT the process exits at once.
 * PUTs in flight die with it; they never reached their final name, and their
 * temporary files are removed at the next start, so nothing half-written can
 * ever be served. */
#define _GNU_SOURCE
#include "agent.h"
#include "crc.h"
#include "net.h"
#include "proto.h"
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/signalfd.h>
#include <unistd.h>

struct agent_config g_cfg;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " AGENT_NAME " --data-dir DIR [options]\n"
            "\n"
            "  --data-dir DIR          where chunks are kept (required; created if missing)\n"
            "  --listen HOST:PORT      TCP listen address (default 127.0.0.1:0, port 0 = any free port;\n"
            "                          IPv6 as [ADDR]:PORT)\n"
            "  --unix PATH             also listen on this Unix socket\n"
            "  --capacity BYTES        refuse PUTs beyond this many stored bytes (default 0 = file system size)\n"
            "  --max-frame BYTES       largest frame payload (default %u, %u..%u)\n"
            "  --max-chunk BYTES       largest chunk (default %llu, at most %llu)\n"
            "  --max-connections N     connections served at once (default 4096)\n"
            "  --io-timeout SECONDS    close a connection stalled mid-frame or not reading (default 30; 0 = never)\n"
            "  --verbose               log every request and connection\n"
            "  --no-direct             write chunk files through the page cache (default: O_DIRECT where the\n"
            "                          file system takes it, from one aligned 1 MiB buffer per stream)\n"
            "  --no-direct-reads       read chunks through the page cache even when it does not hold them\n"
            "                          (default: O_DIRECT for blocks mostly not cached, where the kernel has\n"
            "                          cachestat and the file system takes it; a chunk read again, GETs of it\n"
            "                          lately having asked for as many bytes as it holds, is read through the\n"
            "                          cache, which then keeps it)\n"
            "  --no-read-cache-admission\n"
            "                          a chunk read again is still read past the page cache while that does not\n"
            "                          hold it: nothing a GET reads stays in the cache (one-pass workloads)\n"
            "  --exit-with-parent      exit when stdin reaches end-of-file: stdin must be a pipe whose write end\n"
            "                          only the supervising process holds, so the agent ends with that process\n"
            "                          however it ends (kill -9 included)\n"
            "  --version               print the version and exit\n"
            "  --help                  print this help and exit\n"
            "\n"
            "Prints \"READY HOST:PORT\" on stdout once it accepts connections.\n",
            DEFAULT_MAX_FRAME, MIN_MAX_FRAME, MAX_MAX_FRAME, (unsigned long long)DEFAULT_MAX_CHUNK,
            (unsigned long long)MAX_MAX_CHUNK);
}

static void die_usage(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, AGENT_NAME ": ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    exit(2);
}

static uint64_t parse_u64(const char *opt, const char *v, uint64_t lo, uint64_t hi)
{
    /* strtoull alone would accept "-1", " 5" and "5x". */
    if (!v[0] || v[0] < '0' || v[0] > '9')
        die_usage("invalid value for %s: '%s'", opt, v);
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || x < lo || x > hi)
        die_usage("invalid value for %s: '%s'", opt, v);
    return x;
}

static char g_host[256], g_port[16];

static void parse_listen(const char *v)
{
    const char *colon = strrchr(v, ':');
    if (!colon)
        die_usage("invalid value for %s: '%s' (expected HOST:PORT)", "--listen", v);
    size_t hl = (size_t)(colon - v);
    const char *h = v;
    if (hl >= 2 && v[0] == '[' && v[hl - 1] == ']') {
        h = v + 1;
        hl -= 2;
    }
    if (hl >= sizeof g_host)
        die_usage("invalid value for %s: '%s' (host too long)", "--listen", v);
    memcpy(g_host, h, hl);
    g_host[hl] = 0;
    if (hl == 0)
        strcpy(g_host, "0.0.0.0");
    parse_u64("--listen port", colon + 1, 0, 65535);
    snprintf(g_port, sizeof g_port, "%s", colon + 1);
}

static void parse_args(int argc, char **argv)
{
    g_cfg.listen = "127.0.0.1:0";
    g_cfg.max_frame = DEFAULT_MAX_FRAME;
    g_cfg.max_chunk = DEFAULT_MAX_CHUNK;
    g_cfg.max_connections = 4096;
    g_cfg.io_timeout_ms = 30000;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0)
            die_usage("unexpected argument '%s'%s", a, "");
        char name[64];
        const char *eq = strchr(a, '=');
        const char *val = NULL;
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        if (nl >= sizeof name)
            die_usage("unknown option '%s'%s", a, "");
        memcpy(name, a, nl);
        name[nl] = 0;

        int flag = !strcmp(name, "--help") || !strcmp(name, "--version") || !strcmp(name, "--verbose") ||
                   !strcmp(name, "--exit-with-parent") || !strcmp(name, "--no-direct") ||
                   !strcmp(name, "--no-direct-reads") || !strcmp(name, "--no-read-cache-admission");
        if (flag) {
            if (eq)
                die_usage("option %s takes no value%s", name, "");
        } else if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        }

        if (!strcmp(name, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(name, "--version")) {
            printf(AGENT_NAME " %s (protocol %d)\n", AGENT_VERSION, PROTO_VERSION);
            exit(0);
        } else if (!strcmp(name, "--verbose")) {
            g_cfg.verbose = 1;
            continue;
        } else if (!strcmp(name, "--exit-with-parent")) {
            g_cfg.parent_death = 1;
            continue;
        } else if (!strcmp(name, "--no-direct")) {
            g_cfg.no_direct = 1;
            continue;
        } else if (!strcmp(name, "--no-direct-reads")) {
            g_cfg.no_direct_reads = 1;
            continue;
        } else if (!strcmp(name, "--no-read-cache-admission")) {
            g_cfg.no_read_admission = 1;
            continue;
        }
        int known = !strcmp(name, "--data-dir") || !strcmp(name, "--listen") || !strcmp(name, "--unix") ||
                    !strcmp(name, "--capacity") || !strcmp(name, "--max-frame") || !strcmp(name, "--max-chunk") ||
                    !strcmp(name, "--max-connections") || !strcmp(name, "--io-timeout");
        if (!known)
            die_usage("unknown option '%s'%s", name, "");
        if (!val)
            die_usage("option %s requires a value%s", name, "");

        if (!strcmp(name, "--data-dir")) {
            if (!val[0])
                die_usage("invalid value for %s: '%s'", name, val);
            g_cfg.data_dir = val;
        } else if (!strcmp(name, "--listen")) {
            g_cfg.listen = val;
        } else if (!strcmp(name, "--unix")) {
            if (!val[0])
                die_usage("invalid value for %s: '%s'", name, val);
            g_cfg.unix_path = val;
        } else if (!strcmp(name, "--capacity")) {
            g_cfg.capacity = parse_u64(name, val, 0, UINT64_MAX);
        } else if (!strcmp(name, "--max-frame")) {
            g_cfg.max_frame = (uint32_t)parse_u64(name, val, MIN_MAX_FRAME, MAX_MAX_FRAME);
        } else if (!strcmp(name, "--max-chunk")) {
            g_cfg.max_chunk = parse_u64(name, val, 1, MAX_MAX_CHUNK);
        } else if (!strcmp(name, "--max-connections")) {
            g_cfg.max_connections = (uint32_t)parse_u64(name, val, 1, 10000000);
        } else if (!strcmp(name, "--io-timeout")) {
            uint64_t s = parse_u64(name, val, 0, 86400);
            g_cfg.io_timeout_ms = s ? (int)(s * 1000) : -1;
        }
    }
    if (!g_cfg.data_dir)
        die_usage("missing required option %s%s", "--data-dir", "");
    parse_listen(g_cfg.listen);
    if (g_cfg.unix_path && strlen(g_cfg.unix_path) >= 108)
        die_usage("invalid value for %s: '%s' (path too long for a Unix socket)", "--unix", g_cfg.unix_path);
}

static void raise_nofile(void)
{
    /* One fd per connection plus one per open PUT stream: the default soft
     * limit (often 1024) is far below --max-connections. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_msg(LOG_WARN, "cannot raise open file limit err=\"%s\"", strerror(errno));
    }
}

int crash_armed(const char *name)
{
    return g_cfg.crash_at && !strcmp(g_cfg.crash_at, name);
}

void crash_point(const char *name)
{
    if (g_cfg.crash_at && !strcmp(g_cfg.crash_at, name)) {
        log_msg(LOG_WARN, "crash point reached point=%s: SIGKILL", name);
        raise(SIGKILL);
    }
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    g_cfg.crash_at = getenv("TRIO_SOS_AGENT_CRASH_AT");
    if (g_cfg.crash_at && !g_cfg.crash_at[0])
        g_cfg.crash_at = NULL;

    if (crc32c_selftest() < 0) {
        log_msg(LOG_ERROR, "CRC32C self-test failed");
        return 1;
    }

    /* Block the termination signals before any thread exists so that every
     * thread inherits the mask and they are only ever seen via the signalfd
     * in the accept loop. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    if (sigprocmask(SIG_BLOCK, &sigs, NULL) < 0) {
        log_msg(LOG_ERROR, "sigprocmask failed err=\"%s\"", strerror(errno));
        return 1;
    }
    int sigfd = signalfd(-1, &sigs, SFD_CLOEXEC);
    if (sigfd < 0) {
        log_msg(LOG_ERROR, "signalfd failed err=\"%s\"", strerror(errno));
        return 1;
    }
    /* Writes to a vanished client must fail with EPIPE, not kill the agent. */
    signal(SIGPIPE, SIG_IGN);

    /* A supervisor starts the agent in a session of its own (so a terminal's ^C reaches only the supervisor,
     * which then drains requests before stopping the agent); if the supervisor itself dies, even by SIGKILL,
     * the agent must not outlive it as an orphan holding the port and the data dir.
     *
     * The tie is a pipe on stdin, not PR_SET_PDEATHSIG: that signal fires when the parent *thread* that forked
     * the agent exits, and a supervisor may fork from a worker thread that its runtime retires while the
     * process lives on (Trio starts processes from such threads). A pipe's write end is closed by the kernel
     * only when every process holding it is gone, which is exactly the supervisor's lifetime. */
    int parent_fd = -1;
    if (g_cfg.parent_death) {
        struct stat st;
        if (fstat(STDIN_FILENO, &st) < 0 || !S_ISFIFO(st.st_mode)) {
            log_msg(LOG_ERROR, "--exit-with-parent needs stdin to be a pipe held open by the supervisor");
            return 2;
        }
        parent_fd = STDIN_FILENO;
    }

    raise_nofile();
    if (store_init(g_cfg.data_dir) < 0)
        return 1;

    char bound[300];
    int tcpfd = net_listen_tcp(g_host, g_port, bound, sizeof bound);
    if (tcpfd < 0)
        return 1;
    int unixfd = -1;
    if (g_cfg.unix_path && (unixfd = net_listen_unix(g_cfg.unix_path)) < 0)
        return 1;

    uint64_t capacity, used, chunks, fs_free;
    store_info(&capacity, &used, &chunks, &fs_free);
    char idhex[33];
    id_to_hex(store_agent_id(), idhex);
    log_msg(LOG_INFO,
            "agent started version=%s listen=%s unix=%s data_dir=\"%s\" agent_id=%s chunks=%" PRIu64
            " used=%" PRIu64 " capacity=%" PRIu64 " max_frame=%u max_chunk=%" PRIu64,
            AGENT_VERSION, bound, g_cfg.unix_path ? g_cfg.unix_path : "-", g_cfg.data_dir, idhex, chunks, used,
            capacity, g_cfg.max_frame, g_cfg.max_chunk);

    printf("READY %s\n", bound);
    fflush(stdout);

    const char *why = net_serve(tcpfd, unixfd, sigfd, parent_fd);

    log_msg(LOG_INFO, "agent stopping reason=%s", why);
    if (g_cfg.unix_path)
        unlink(g_cfg.unix_path);
    exit(0);
}
