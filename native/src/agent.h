/* Process-wide configuration and logging. */
#ifndef TSOS_AGENT_H
#define TSOS_AGENT_H

#include <stdint.h>

#define AGENT_NAME "trio-sos-agent"
#define AGENT_VERSION "1.0.0"

struct agent_config {
    const char *data_dir;
    const char *listen;    /* HOST:PORT */
    const char *unix_path; /* NULL if none */
    uint64_t capacity;     /* 0 = filesystem size */
    uint32_t max_frame;
    uint64_t max_chunk;
    uint32_t max_connections;
    int io_timeout_ms; /* -1 = never */
    int verbose;
    int parent_death;
    int no_direct; /* chunk files written through the page cache (writev), not with O_DIRECT */
    int no_direct_reads; /* chunks always read through the page cache, even when it does not hold them */
    int no_read_admission; /* a chunk read again is still read past the page cache while that does not hold it */
    const char *crash_at; /* test failpoint (TRIO_SOS_AGENT_CRASH_AT), NULL in production */
};

extern struct agent_config g_cfg;

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* One line: "<ISO time> <LEVEL> <message>"; the message carries its own
 * key=value pairs. DEBUG lines only appear with --verbose. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Crash-consistency tests: when the environment variable TRIO_SOS_AGENT_CRASH_AT names this point, the agent
 * SIGKILLs itself here, exactly as kill -9 at that instant would. Unset (always, outside tests) it costs one
 * pointer comparison. Points: commit-begin, commit-fsynced, commit-linked, commit-tmp-removed, commit-durable. */
void crash_point(const char *name);
/* Whether the crash point `name` is armed (for fault injection that must act before it crashes). */
int crash_armed(const char *name);

#endif
