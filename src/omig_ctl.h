/*
 * The control plane's framing (doc/contracts.md, "Control plane"): tool -> mpirun -> orteds ->
 * ranks. Every link is a local unix stream socket (or an ORTE RML buffer that carries the same
 * fields), so the header is in host byte order.
 *
 * Plain POSIX on purpose: linked into the tool, the ORTE side-car and the MPI ranks' crcp
 * component, none of which may drag in the others' libraries.
 *
 * Functions return 0 (or a count/fd) on success and a negative errno value on failure.
 */
#ifndef OMIG_CTL_H
#define OMIG_CTL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define OMIG_CTL_MAGIC   0x4f4d4947u    /* "OMIG" */
#define OMIG_CTL_VERSION 1

/* Bound on one payload: a status table of ~10^4 ranks fits; a corrupt length does not make a
 * side-car allocate gigabytes. */
#define OMIG_CTL_MAX_PAYLOAD (1u << 20)

/* Message types. Down = towards the ranks, up = towards the tool. */
enum omig_ctl_type {
    OMIG_CTL_HELLO = 1,     /* rank -> orted: rank = vpid, payload = pid as decimal text */
    OMIG_CTL_QUIESCE = 2,   /* down: payload = int32 ranks whose channels close (empty: all) */
    OMIG_CTL_QUIESCED = 3,  /* up: status 0 or error, payload = stats text "key=value ..." */
    OMIG_CTL_RESUME = 4,    /* down: no payload */
    OMIG_CTL_RESUMED = 5,   /* up: status 0 or error, payload = stats text */
    OMIG_CTL_ERROR = 6,     /* up: status = an omig_ctl_status, payload = message text */
    OMIG_CTL_STATUS = 7,    /* tool -> mpirun, and the reply: payload = rank table (below) */
    OMIG_CTL_MIGRATE = 8,   /* tool -> mpirun: payload = "rank=R to=NODE" */
    OMIG_CTL_MIGRATED = 9,  /* mpirun -> tool: payload = report "key=value ..." (below) */
    OMIG_CTL_LEAVE = 10,    /* orted -> rank about to move: leave PMIx, close transports */
    OMIG_CTL_LEFT = 11,     /* rank -> orted: status 0 (it may be dumped now) or error;
                             * payload "ctl_ino=I": the inode of its end of this link */
    OMIG_CTL_REJOIN = 12,   /* orted -> rank that runs again (moved or rolled back): payload =
                             * the PMIx environment to use, NUL-separated "NAME=VALUE" strings
                             * (empty: keep its own) */
    OMIG_CTL_REJOINED = 13, /* rank -> orted: status 0 or error; payload "tcp=ADDR:PORT:KINDEX,..."
                             * its new transport addresses */
    OMIG_CTL_REPAIR = 14,   /* down to every rank: payload "rank=R tcp=...": R's new addresses */
    OMIG_CTL_REPAIRED = 15, /* up: status 0 or error */
    OMIG_CTL_CHECKPOINT = 16,   /* tool -> mpirun: payload "dir=STORE stop=0|1 keep=K" */
    OMIG_CTL_CHECKPOINTED = 17, /* mpirun -> tool: report "dir=.. seq=.. ..." + a line per rank */
    OMIG_CTL_TRACK = 18,    /* orted -> rank: make a userfaultfd for dirty tracking */
    OMIG_CTL_TRACKED = 19,  /* rank -> orted: status 0 and the userfaultfd passed along
                             * (SCM_RIGHTS; the rank has closed its copy), or ERROR */
    OMIG_CTL_RATE = 20,     /* tool -> mpirun "rank=R seconds=S interval_ms=I", and the reply:
                             * "rank= node= tracked_bytes= written_bytes= rounds= interval_ms=
                             * max_round_bytes=" (the rank's dirty rate, measured) */
};

/* Status codes the side-cars put in ERROR replies (ranks may send any non-zero value). */
enum omig_ctl_status {
    OMIG_CTL_OK = 0,
    OMIG_CTL_EFAIL = 1,      /* a rank reported failure: the message says which and why */
    OMIG_CTL_ETIMEDOUT = 2,  /* a rank did not answer in time */
    OMIG_CTL_EGONE = 3,      /* a rank is not connected (exited, or never said HELLO) */
    OMIG_CTL_EBUSY = 4,      /* another request of this job is in progress */
    OMIG_CTL_EINVAL = 5,     /* malformed request (e.g. a rank that does not exist) */
    OMIG_CTL_ENOPLUGIN = 6,  /* no rank of the job speaks the protocol (no --mca crcp migrate) */
    OMIG_CTL_EPERM = 7,      /* peer is neither the job owner nor root */
    OMIG_CTL_EROLLBACK = 8,  /* a migration failed; the rank runs on its original node again */
    OMIG_CTL_ELOST = 9,      /* a migration failed and the rank could not be brought back */
};

/* MIGRATED payload: one line "key=value ..." with rank, from, to (node names), pid (after the
 * move), and the phases in milliseconds: leave_ms (the rank leaving the runtime; 0 for a
 * process without a control link), detach_ms, dump_ms, transfer_ms, restore_ms (CRIU restore
 * and adoption up to SIGCONT), downtime_ms (frozen on the old node -> running on the new one,
 * seen from mpirun), total_ms; bytes and files of the image. A failed migration is an ERROR
 * whose message names the phase ("dump", "transfer", "restore", ...) and the cause. */

/* STATUS reply payload: lines of text. The first line is a summary, then one line per rank:
 *   # job=<mpirun pid> ranks=<n> connected=<n that said HELLO and are still there>
 *   <rank> <node> <pid> <state>
 * state: starting (no HELLO yet), ready, quiescing, quiesced, resuming, gone, exited,
 * migrating (a move of the rank is in progress). */

struct omig_ctl_hdr {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint32_t epoch;
    int32_t rank;
    int32_t status;
    uint32_t len;
};

const char *omig_ctl_type_name(int type);

/* One message: header then len payload bytes. Handles partial writes and EINTR; waits at most
 * a few seconds for a peer that does not read (a non-blocking fd is fine). No SIGPIPE. */
int omig_ctl_send(int fd, int type, uint32_t epoch, int32_t rank, int32_t status,
                  const void *payload, size_t len);
/* The same with passfd (>= 0) passed along to the peer (SCM_RIGHTS on a unix socket): a
 * reader keeps it for omig_ctl_reader_take_fd. */
int omig_ctl_send_fd(int fd, int type, uint32_t epoch, int32_t rank, int32_t status,
                     const void *payload, size_t len, int passfd);

/* Blocking receive of one message into hdr and buf (payload NUL-terminated when it fits,
 * so text payloads can be used as strings). Returns the payload length. timeout_ms bounds the
 * wait for a message to begin (< 0: forever), so a polling loop never loses half a message.
 * -ETIMEDOUT (nothing arrived), -ECONNRESET (peer closed), -EPROTO (bad magic/version, or the
 * peer stalled mid-message), -EMSGSIZE (payload larger than bufsize: consumed and dropped). */
ssize_t omig_ctl_recv(int fd, struct omig_ctl_hdr *hdr, void *buf, size_t bufsize,
                      int timeout_ms);

/* Incremental receive for event loops (a non-blocking fd): call when the fd is readable.
 * Returns 1 when a whole message is in r->hdr/r->payload (NUL-terminated, owned by r, valid
 * until the next call), 0 when more bytes are needed, negative as omig_ctl_recv. */
struct omig_ctl_reader {
    struct omig_ctl_hdr hdr;
    size_t got;                 /* bytes of the current message read so far */
    char *payload;
    size_t cap;
    int fd;                     /* passed with a message (SCM_RIGHTS), not taken yet; or -1 */
};
void omig_ctl_reader_init(struct omig_ctl_reader *r);
int omig_ctl_reader_feed(int fd, struct omig_ctl_reader *r);
int omig_ctl_reader_take_fd(struct omig_ctl_reader *r);
void omig_ctl_reader_free(struct omig_ctl_reader *r);

/* Listening socket at path: parent directory created 0700 (an existing one must be ours and
 * not open to others), a stale socket file replaced (a live one: -EADDRINUSE), socket 0600,
 * close-on-exec. */
int omig_ctl_listen(const char *path);
/* Accept one peer (close-on-exec); -EAGAIN when none is pending on a non-blocking listener. */
int omig_ctl_accept(int lfd);
/* Connected, blocking, close-on-exec socket to path. */
int omig_ctl_connect(const char *path);

/* SO_PEERCRED of a connected unix socket. */
int omig_ctl_peer_cred(int fd, pid_t *pid, uid_t *uid);
/* 1 if the peer runs as our effective uid or as root, 0 if not, negative on error. */
int omig_ctl_peer_allowed(int fd);

/* Directory of this user's control sockets: /tmp/ompi-migrate-<euid>. */
int omig_ctl_dir(char *buf, size_t len);
/* The job socket of the mpirun with this pid: <dir>/job-<pid>.sock. */
int omig_ctl_job_path(char *buf, size_t len, pid_t mpirun_pid);
/* mpirun pids of the job sockets in this user's directory, ascending; count or negative. */
int omig_ctl_list_jobs(pid_t *pids, int max);

/* Tool side: a connection to the job of mpirun pid *pid (0: the only job of this user, and
 * *pid is set). On failure returns a negative errno value and err says what is wrong and what
 * to do: unknown job (listing the running ones), stale socket (removed), permission denied. */
int omig_ctl_open_job(pid_t *pid, char *err, size_t errlen);

/* Tool side: send one request and wait for its answer. *reply is malloc'd (NUL-terminated,
 * the caller frees it); returns the reply's payload length or a negative errno value. */
ssize_t omig_ctl_call(int fd, int type, const void *payload, size_t len,
                      struct omig_ctl_hdr *hdr, char **reply, int timeout_ms);

/* Tool side: s as a JSON string literal (quoted, escaped). */
void omig_ctl_json_string(FILE *f, const char *s);
/* Tool side: a "key=value" value as JSON: a number if it is one, else a string. */
void omig_ctl_json_value(FILE *f, const char *v);

/* Milliseconds on the monotonic clock, for deadlines and latency figures. */
double omig_ctl_now_ms(void);

/* This node's name for messages, as ORTE names it: the host name up to its first dot. */
void omig_ctl_node(char *buf, size_t len);

#endif
