/*
 * Carry a CRIU image directory from one node to another over TCP.
 *
 * Flat directories of regular files only (what `criu dump` writes). One connection per
 * directory; per file: name, mode, size, data and a 64-bit checksum the receiver verifies.
 * The receiver writes into a 0700 directory with 0600 files and answers with one status byte,
 * so the sender knows the images arrived intact before it lets anything depend on them.
 *
 * Functions return 0 (or an fd) on success, -1 with `err` filled on failure.
 */
#ifndef OMIG_XFER_H
#define OMIG_XFER_H

#include <stddef.h>
#include <pthread.h>
#include <stdint.h>

struct omig_xfer_stats {
    uint64_t files;
    uint64_t bytes;      /* file data, without protocol headers */
    double seconds;      /* connect/accept to the receiver's verdict */
};

/* A transfer's key: a receiver takes only a sender that knows it (mpirun gives a fresh one to
 * both daemons of each move; `image recv` makes its own and prints it). The images become a
 * process on the receiving node: a stranger on the network must not be able to send any. */
#define OMIG_XFER_KEY_LEN 16
#define OMIG_XFER_KEY_HEX (2 * OMIG_XFER_KEY_LEN + 1)   /* as hex digits, with the NUL */
int omig_xfer_key_new(char hex[OMIG_XFER_KEY_HEX]);

/* Listen on ADDR:PORT (IPv4 or IPv6 literal or host name; port 0 = ephemeral). Returns the
 * listening fd; *bound_port gets the port actually bound. */
int omig_xfer_listen(const char *addr, uint16_t port, uint16_t *bound_port, char *err, size_t len);

/* Accept one sender with KEY on LISTEN_FD (waiting at most timeout_ms, <= 0: forever;
 * connections without the key are dropped and the wait goes on), receive its directory into
 * DIR (created 0700; existing files of the same name are replaced). A full disk is said as
 * omig_disk_full_text does, to the sender too. */
int omig_xfer_recv(int listen_fd, const char *dir, int timeout_ms, const char *key,
                   struct omig_xfer_stats *st, char *err, size_t len);

/* Send every regular file of DIR to HOST:PORT. Connection refusals are retried for up to
 * timeout_ms (the receiver may not listen yet; <= 0: 10 s). */
int omig_xfer_send(const char *dir, const char *host, uint16_t port, int timeout_ms,
                   const char *key, struct omig_xfer_stats *st, char *err, size_t len);

/* The same in steps, for a transfer that carries a CRIU page-server session first: the sender
 * connects and says what comes (flags), the receiver accepts and learns it; then each sends or
 * receives the directory on that socket (which the caller closes). */
#define OMIG_XFER_PAGES_FIRST 1u    /* a dump's pages, through --ps-socket (omig_criu.h) */
int omig_xfer_connect(const char *host, uint16_t port, int timeout_ms, const char *key,
                      uint32_t flags, char *err, size_t len);
/* Every file of dir but skip (NULL: none) on sock, then the receiver's verdict; st counts on
 * from what was sent before on sock (omig_xfer_send_follow). */
int omig_xfer_send_on(int sock, const char *dir, const char *skip, struct omig_xfer_stats *st,
                      char *err, size_t len);
/* While another thread writes into dir (CRIU dumping): wait for a file whose name starts
 * with prefix and send it as it grows, until *finished is set and all of it went. Its name
 * goes to name ("" if none appeared before *finished), so that send_on skips it. */
int omig_xfer_send_follow(int sock, const char *dir, const char *prefix,
                          const volatile int *finished, char *name, size_t nlen,
                          struct omig_xfer_stats *st, char *err, size_t len);
int omig_xfer_accept(int listen_fd, int timeout_ms, const char *key, uint32_t *flags,
                     char *err, size_t len);
int omig_xfer_recv_on(int sock, const char *dir, struct omig_xfer_stats *st, char *err,
                      size_t len);

/* CRIU corks its page-server socket, and its last message is small: Linux holds a partial
 * frame back for up to 200 ms, which every streamed dump paid at its end. While criu uses
 * SOCK, a flusher thread pushes out data that sat unsent for a millisecond. */
struct omig_xfer_flusher {
    pthread_t tid;
    int sock, stop, running;
};
int omig_xfer_flusher_start(struct omig_xfer_flusher *f, int sock);
void omig_xfer_flusher_stop(struct omig_xfer_flusher *f);

/* The checksum used on the wire (FNV-1a over 64-bit words in 4 lanes, then the tail bytes):
 * exported so tests and other parts can verify files the same way. */
uint64_t omig_xfer_checksum(const void *data, size_t n, uint64_t state);
#define OMIG_XFER_CHECKSUM_INIT 0xcbf29ce484222325ULL

#endif
