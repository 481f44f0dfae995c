/* UDP blaster for the per-packet forwarding benchmark (bench/perpacket.py).
 *
 * Sends fixed-size UDP datagrams from SRC:SPORT to DST:DPORT with sendmmsg() in batches for a bounded
 * number of seconds and prints one JSON line: datagrams sent, wall time, and this thread's CPU time
 * (CLOCK_THREAD_CPUTIME_ID, the scheduler's exact runtime, which includes the softirq work that veth
 * runs in the sender's context).
 *
 *   blaster SRC SPORT DST DPORT SECONDS [PAYLOAD_BYTES]
 *
 * Traffic goes only where the caller's network namespace routes it (bench/perpacket.py runs it in a
 * namespace of its own). Errors such as ENOBUFS are counted, not fatal.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32

static double now(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: %s SRC SPORT DST DPORT SECONDS [PAYLOAD_BYTES]\n", argv[0]);
        return 2;
    }
    double seconds = atof(argv[5]);
    int size = argc > 6 ? atoi(argv[6]) : 64;
    if (seconds <= 0 || seconds > 60 || size < 1 || size > 1400) {
        fprintf(stderr, "SECONDS must be in (0, 60], PAYLOAD_BYTES in [1, 1400]\n");
        return 2;
    }

    struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[4]))};
    if (inet_pton(AF_INET, argv[1], &src.sin_addr) != 1 || inet_pton(AF_INET, argv[3], &dst.sin_addr) != 1) {
        fprintf(stderr, "bad address\n");
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0 ||
        connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0) {
        perror("socket");
        return 1;
    }

    static char payload[1400];
    memset(payload, 'b', sizeof(payload));
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = payload;
        iov[i].iov_len = size;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }

    unsigned long long sent = 0, errors = 0;
    double cpu0 = now(CLOCK_THREAD_CPUTIME_ID), t0 = now(CLOCK_MONOTONIC), t = t0;
    while (t - t0 < seconds) {
        for (int k = 0; k < 16; k++) {
            int n = sendmmsg(fd, msgs, BATCH, 0);
            if (n > 0)
                sent += n;
            else
                errors++;
        }
        t = now(CLOCK_MONOTONIC);
    }
    double cpu = now(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    printf("{\"sent\": %llu, \"errors\": %llu, \"wall_s\": %.6f, \"cpu_s\": %.6f}\n", sent, errors, t - t0, cpu);
    close(fd);
    return 0;
}
