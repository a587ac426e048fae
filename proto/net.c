/* Socket helpers shared by the node and the client library: parsing
 * "HOST:PORT" and writing a channel's queued output to a non-blocking
 * socket. The channel itself stays free of I/O. */
#include "proto.h"

#include "../common/common.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

int net_split_hostport(const char *s, char *host, size_t hcap, char *port,
                       size_t pcap)
{
    const char *colon = strrchr(s, ':');
    if (!colon || !colon[1])
        return KV_ERR_INVAL;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl >= hcap || strlen(colon + 1) >= pcap)
        return KV_ERR_INVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    strcpy(port, colon + 1);
    return 0;
}

int net_connect_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        return errno;
    return err;
}

int net_flush(struct chan *c, int fd)
{
    const uint8_t *p;
    size_t n;
    for (chan_output(c, &p, &n); n > 0; chan_output(c, &p, &n)) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0)
            chan_output_done(c, (size_t)w);
        else if (w < 0 && errno == EINTR)
            continue;
        else if (w < 0 && errno == EAGAIN)
            return 0;
        else
            return KV_ERR_CLOSED;
    }
    return 0;
}
