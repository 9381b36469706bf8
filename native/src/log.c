#include "agent.h"
#include "proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (level == LOG_DEBUG && !g_cfg.verbose)
        return;

    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    /* A single write() per line keeps lines from concurrent threads whole
     * without a lock (stdio would need one). */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

const char *status_name(int st)
{
    static const char *names[] = {
        "OK",         "BAD_FRAME", "UNKNOWN_OP", "BAD_REQUEST",       "PROTOCOL", "VERSION",  "NOT_FOUND", "EXISTS",
        "TOO_LARGE", "CHECKSUM_MISMATCH", "CORRUPT", "NO_SPACE", "IO_ERROR", "RANGE", "BUSY",
    };
    if (st < 0 || st >= (int)(sizeof names / sizeof names[0]))
        return "?";
    return names[st];
}
