#ifndef TSOS_NET_H
#define TSOS_NET_H

#include <stddef.h>

/* Binds and listens; writes "host:port" of the bound socket into bound.
 * Returns the fd, or -1 after logging why. */
int net_listen_tcp(const char *host, const char *port, char *bound, size_t boundlen);
int net_listen_unix(const char *path);

/* Accept loop. Returns, for a clean exit, why it stopped: "signal" when sigfd becomes readable, "supervisor-gone"
 * when parent_fd (a pipe's read end, -1 for none) reaches end-of-file, "poll-error" if polling fails. */
const char *net_serve(int tcpfd, int unixfd, int sigfd, int parent_fd);

#endif
