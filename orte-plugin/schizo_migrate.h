/*
 * schizo/migrate: the runtime side-car, loaded into mpirun and every orted.
 *
 * schizo is multi-select and opened early in orte_init, so a component whose query returns a
 * module rides along with every daemon without replacing any of ORTE's single-select
 * frameworks (errmgr, state, odls). In mpirun it serves the control socket of `ompi-migrate`;
 * in each orted it relays control commands to the node's ranks and will detach and adopt ranks
 * (doc/design.md).
 *
 * Control plane (doc/contracts.md), one file per side:
 *   schizo_migrate_hnp.c    mpirun: the job socket, requests, per-rank state, timeouts
 *   schizo_migrate_orted.c  every daemon (and mpirun for ranks on its own node): the node
 *                           socket the ranks connect to, relaying down and up
 *   schizo_migrate_rml.c    the ORTE RML messages between the two
 * Moving one rank (doc/design.md, "One migration"):
 *   schizo_migrate_move.c   mpirun: the coordinator of one move: phases, timeouts, rollback
 *   schizo_migrate_lost.c   mpirun: a node that dies without ranks does not end the job
 *   schizo_migrate_detach.c the old node's daemon: inspect, leave, detach, dump + send, keep
 *                           the images until the move is committed, roll back
 *   schizo_migrate_adopt.c  the new node's daemon: image receiver, restore, adopt
 *                           (also the old node's restore from its own images on rollback)
 *   schizo_migrate_image.c  CRIU dump/restore and image transfer in helper threads; the
 *                           stdio keys and the manifest kept with the images
 *   schizo_migrate_local.c  a daemon's bookkeeping of its local children and job counts
 *   schizo_migrate_map.c    the job map in mpirun and every daemon: where a rank lives
 *   schizo_migrate_text.c   "key=value" text used in replies and reports
 * Everything here runs in ORTE's event thread (orte_event_base): socket fds are driven by opal
 * events on that base and RML delivers there. Only CRIU and image transfers run in helper
 * threads (they block for up to seconds); their results are thread-shifted back.
 */
#ifndef MCA_SCHIZO_MIGRATE_H
#define MCA_SCHIZO_MIGRATE_H

#include "orte_config.h"

#include <stdbool.h>
#include <sys/types.h>

#include "orte/mca/schizo/schizo.h"
#include "orte/runtime/orte_globals.h"
#include "orte/types.h"

#include "omig_ctl.h"

BEGIN_C_DECLS

struct mca_schizo_migrate_params_t {
    int verbose;        /* opal_output verbosity */
    int timeout;        /* seconds mpirun waits for every rank to answer a request */
    int move_timeout;   /* seconds mpirun waits for a dump+transfer, a restore or a rollback */
    char *fail;         /* tests only: "PHASE:RANK,..." phases that fail on purpose */
    char *strategy;     /* a move's default: "copy" or "stream" */
    bool plain;         /* also move processes without the plugin (not MPI ranks) */
    int checkpoint_interval;    /* seconds between periodic checkpoints (0: none) */
    char *checkpoint_dir;       /* their store */
    int checkpoint_keep;        /* how many of them are kept */
    int checkpoint_full_every;  /* every Nth checkpoint is whole, the others deltas (0: never) */
    char *restart;              /* mpirun restarts the job from this checkpoint */
};
extern struct mca_schizo_migrate_params_t mca_schizo_migrate_params;
extern int mca_schizo_migrate_output;

ORTE_MODULE_DECLSPEC extern orte_schizo_base_component_t mca_schizo_migrate_component;
extern orte_schizo_base_module_t mca_schizo_migrate_module;

/* Level 0 always prints: errors. 10: phases, 20: requests, 50: every protocol message. */
#define SCHIZO_MIGRATE_VERBOSE(level, ...) \
    opal_output_verbose((level), mca_schizo_migrate_output, __VA_ARGS__)
#define SCHIZO_MIGRATE_ERROR(...) SCHIZO_MIGRATE_VERBOSE(0, __VA_ARGS__)

/* schizo_migrate_rml.c: messages between mpirun's and the daemons' side-cars. */
int schizo_migrate_rml_start(void);
int schizo_migrate_rml_down(orte_vpid_t daemon, orte_jobid_t job, const orte_vpid_t *vpids,
                            int nvpids, const struct omig_ctl_hdr *hdr, const void *payload);
int schizo_migrate_rml_reply(orte_jobid_t job, orte_vpid_t vpid,
                             const struct omig_ctl_hdr *hdr, const void *payload);
int schizo_migrate_rml_hello(orte_jobid_t job, orte_vpid_t vpid, pid_t pid);
int schizo_migrate_rml_gone(orte_jobid_t job, orte_vpid_t vpid);

/* schizo_migrate_hnp.c: mpirun's side. */
int schizo_migrate_hnp_start(void);
void schizo_migrate_hnp_stop(void);
void schizo_migrate_hnp_reply(orte_jobid_t job, orte_vpid_t vpid,
                              const struct omig_ctl_hdr *hdr, const char *payload);
void schizo_migrate_hnp_hello(orte_jobid_t job, orte_vpid_t vpid, pid_t pid);
void schizo_migrate_hnp_gone(orte_jobid_t job, orte_vpid_t vpid);

/* schizo_migrate_orted.c: the node's side (orteds, and mpirun for its own local ranks). */
void schizo_migrate_daemon_start_soon(void);      /* schizo_migrate_module.c */
int schizo_migrate_orted_start(void);
void schizo_migrate_orted_stop(void);
const char *schizo_migrate_orted_path(void);
void schizo_migrate_orted_down(orte_jobid_t job, const orte_vpid_t *vpids, int nvpids,
                               const struct omig_ctl_hdr *hdr, const char *payload);

/* An answer over a rank's control link (status OMIG_CTL_OK or an error, and its text), or
 * OMIG_CTL_EGONE if the link closed first; called once, in the event thread. */
typedef void (*schizo_migrate_link_fn)(void *arg, int32_t status, const char *text);
/* Leaving before a dump: ask a rank over its control link; 0 if asked, -ENOENT if the rank has
 * no control link (not an MPI rank with the plugin: it needs no leave). fn gets its LEFT
 * ("ctl_ino=..."). */
int schizo_migrate_orted_leave(orte_jobid_t job, orte_vpid_t vpid, uint32_t epoch,
                               schizo_migrate_link_fn fn, void *arg);
/* Nobody waits for that LEFT any more (a late one is ignored). */
void schizo_migrate_orted_leave_cancel(orte_jobid_t job, orte_vpid_t vpid);
/* A rank runs again after a move or a rollback: send it REJOIN with env (NUL-separated
 * "NAME=VALUE"; empty: it keeps its own) over its link, which is fd when >= 0 (the daemon's end
 * of the socket plugged into a restored rank; owned from now on). fn gets its REJOINED
 * ("tcp=..." addresses) or the error, in the event thread; 0 if sent. */
int schizo_migrate_orted_rejoin(orte_jobid_t job, orte_vpid_t vpid, pid_t pid, int fd,
                                const char *env, size_t envlen, uint32_t epoch,
                                schizo_migrate_link_fn fn, void *arg);

/* Ask a local rank for a userfaultfd to track its dirty pages: fn gets, in the event thread,
 * OMIG_CTL_OK and the fd (owned from then on), or an error and -1. 0 if asked; -ENOENT: no
 * control link (or it left), -EBUSY: already asked. */
typedef void (*schizo_migrate_track_fn)(void *arg, int32_t status, const char *text, int fd);
int schizo_migrate_orted_track(orte_jobid_t job, orte_vpid_t vpid,
                               schizo_migrate_track_fn fn, void *arg);
/* The pid the rank's control link speaks for (its HELLO), -1 if it has none. */
pid_t schizo_migrate_orted_pid(orte_jobid_t job, orte_vpid_t vpid);

/* ------------------------------------------------------------------ moving one rank */

/* Steps of a move between mpirun's coordinator and the daemons (RML kind MOVE). A reply
 * carries its request's step with SM_REPLY set, the status (OMIG_CTL_OK or an omig_ctl_status)
 * and "key=value ..." text, or on failure "PHASE: message". */
enum schizo_migrate_step {
    /* mpirun -> the daemon of the rank's node (A) */
    SM_INSPECT = 1,  /* is it a live local child? reply "pid=P start=S" */
    SM_EVICT,        /* "addr=.. port=..": leave, detach, dump, send; reply: phase timings */
    SM_ROLLBACK,     /* the new node failed: restore the rank here from the images kept */
    /* mpirun -> the daemon of the target node (B) */
    SM_PREPARE,      /* "pid=P start=S": image dir + receiver; reply "addr=.. port=.." */
    SM_ADOPT,        /* restore, stopped and watched; reply "restore_ms=.. pid=.." */
    SM_RESUME,       /* the move is committed: attach (children, IOF, PMIx), SIGCONT */
    SM_CANCEL,       /* forget the move; a restored, never resumed copy is killed (no reply) */
    /* mpirun -> every daemon: the rank lives under daemon `daemon` now (no reply) */
    SM_MOVED,
    /* mpirun -> the rank's daemon, checkpoint: "dir=D": leave, dump into D and run on, rejoin;
     * reply "tcp=.. digest=.." (schizo_migrate_snapshot.c) */
    SM_SNAPSHOT,
    /* mpirun -> the daemon of a restarted job's placeholder: "dir=D stdin=0|1": replace it
     * by the rank restored from D; reply "tcp=.." (schizo_migrate_revive.c) */
    SM_REVIVE,
    /* mpirun -> the rank's daemon: "seconds=S interval_ms=I": its dirty rate, measured
     * (schizo_migrate_rate.c); reply "tracked_bytes= written_bytes= rounds= ..." */
    SM_RATE,
    SM_REPLY = 0x100
};

struct schizo_migrate_msg {
    int32_t step;
    uint32_t id;            /* the move's number (mpirun's counter) */
    orte_jobid_t job;
    orte_vpid_t vpid;       /* the rank */
    orte_vpid_t daemon;     /* SM_MOVED: its new daemon */
    int32_t status;
    const char *text;
};

/* schizo_migrate_rml.c: to a daemon (ORTE_VPID_INVALID: to mpirun). */
int schizo_migrate_rml_move(orte_vpid_t daemon, const struct schizo_migrate_msg *m);
/* A daemon's reply to request req. */
void schizo_migrate_rml_answer(const struct schizo_migrate_msg *req, int32_t status,
                               const char *text);

/* schizo_migrate_move.c: mpirun's coordinator. */
struct tool_conn;
void schizo_migrate_move_start(struct tool_conn *tool, const char *request);
void schizo_migrate_move_reply(const struct schizo_migrate_msg *m);
void schizo_migrate_move_tool_closed(struct tool_conn *tool);
/* Is rank vpid being moved (ORTE_VPID_WILDCARD: is any)? */
bool schizo_migrate_move_runs_on(orte_vpid_t daemon);
void schizo_migrate_move_daemon_lost(orte_vpid_t daemon, const char *node);
void schizo_migrate_lost_start(void);            /* schizo_migrate_lost.c */
bool schizo_migrate_move_active(orte_vpid_t vpid);
void schizo_migrate_move_stop(void);

/* schizo_migrate_hnp.c: what the coordinator needs of mpirun's side. */
orte_job_t *schizo_migrate_hnp_job(void);
bool schizo_migrate_hnp_busy(char *what, size_t len);
void schizo_migrate_hnp_tool_send(struct tool_conn *c, int type, int32_t status,
                                  const char *text);
/* A QUIESCE, REPAIR or RESUME of the whole job on behalf of a move (no tool): done gets
 * OMIG_CTL_OK and the per-rank answers, or the failure (a failed QUIESCE was undone). */
/* Is the rank connected to the control plane (an MPI rank with the plugin)? And how many are. */
bool schizo_migrate_hnp_connected(orte_vpid_t vpid, int *nconnected);
typedef void (*schizo_migrate_request_fn)(void *arg, int32_t status, const char *text);
int schizo_migrate_hnp_request(int type, const void *payload, size_t len,
                               schizo_migrate_request_fn done, void *arg);

/* schizo_migrate_rate.c: a rank's dirty rate; mpirun's side (tool request, the daemon's
 * reply) and the daemon's (SM_RATE). */
void schizo_migrate_rate_start(struct tool_conn *tool, const char *request);
void schizo_migrate_rate_reply(const struct schizo_migrate_msg *m);
void schizo_migrate_rate_tool_closed(struct tool_conn *tool);
bool schizo_migrate_rate_active(void);
void schizo_migrate_rate_request(const struct schizo_migrate_msg *m);
void schizo_migrate_rate_stop(void);

/* schizo_migrate_detach.c: the old node's side. */
void schizo_migrate_detach_request(const struct schizo_migrate_msg *m);
void schizo_migrate_detach_commit(orte_jobid_t job, orte_vpid_t vpid, uint32_t id);
void schizo_migrate_detach_stop(void);

/* schizo_migrate_adopt.c: the new node's side, and restoring from kept images. */
void schizo_migrate_adopt_request(const struct schizo_migrate_msg *m);
/* Restore proc from the images in dir under this daemon and let it run (an MPI rank rejoins
 * the runtime: rejoined is its "tcp=..." answer); done() is called in the event thread with 0
 * or -1 and a message. registered: its PMIx client is known to this daemon's server (a
 * rollback, a restart's placeholder), so it is not registered again; new_env: it rejoins with
 * this daemon's PMIx environment (a restart), not its own; stdin_open: mpirun still forwards
 * its stdin to this rank. */
typedef void (*schizo_migrate_adopt_done_fn)(void *arg, int rc, const char *err, pid_t pid,
                                             double restore_ms, const char *rejoined);
int schizo_migrate_adopt_here(orte_proc_t *proc, const char *dir, bool registered,
                              bool new_env, bool stdin_open, schizo_migrate_adopt_done_fn done,
                              void *arg);
/* The PMIx environment computed for a rank adopted here (NULL if none), kept until it leaves:
 * for its re-attach. */
char **schizo_migrate_adopt_env(orte_jobid_t job, orte_vpid_t vpid);
void schizo_migrate_adopt_forget(orte_jobid_t job, orte_vpid_t vpid);
void schizo_migrate_adopt_stop(void);

/* schizo_migrate_snapshot.c: a rank's daemon during a checkpoint. */
void schizo_migrate_snapshot_request(const struct schizo_migrate_msg *m);
void schizo_migrate_snapshot_stop(void);

/* schizo_migrate_checkpoint.c: mpirun's coordinator of checkpoints (on request, periodic). */
void schizo_migrate_checkpoint_start(struct tool_conn *tool, const char *request);
void schizo_migrate_checkpoint_reply(const struct schizo_migrate_msg *m);
void schizo_migrate_checkpoint_tool_closed(struct tool_conn *tool);
bool schizo_migrate_checkpoint_active(void);
/* mpirun starts: arm the periodic checkpoints, if asked for. */
void schizo_migrate_checkpoint_arm(void);
void schizo_migrate_checkpoint_stop(void);

/* schizo_migrate_revive.c: a restarted job's daemon swaps a placeholder for its rank. */
void schizo_migrate_revive_request(const struct schizo_migrate_msg *m);

/* schizo_migrate_restart.c: mpirun of a restarted job (schizo_migrate_restart=DIR). */
void schizo_migrate_restart_start(void);
void schizo_migrate_restart_reply(const struct schizo_migrate_msg *m);
bool schizo_migrate_restart_active(void);
void schizo_migrate_restart_stop(void);

/* schizo_migrate_map.c: where ranks live, in this process's copy of the job map. */
int schizo_migrate_map_move(orte_jobid_t job, orte_vpid_t vpid, orte_vpid_t daemon);
void schizo_migrate_map_moved(const struct schizo_migrate_msg *m);
/* mpirun: does mpirun still forward its stdin to this rank? Redirect it to the new daemon. */
bool schizo_migrate_map_stdin_open(orte_jobid_t job, orte_vpid_t vpid);
void schizo_migrate_map_stdin_follow(orte_jobid_t job, orte_vpid_t vpid, orte_vpid_t daemon);
/* The IPv4 address this daemon is reached at (its first OOB TCP address). */
int schizo_migrate_map_my_addr(char *buf, size_t len);

/* schizo_migrate_local.c: a daemon's local children (see the file for the accounting). */
typedef void (*schizo_migrate_exit_fn)(void *arg, int status);
struct schizo_migrate_watch {
    schizo_migrate_exit_fn fn;
    void *arg;
};
orte_proc_t *schizo_migrate_local_child(orte_jobid_t job, orte_vpid_t vpid);
void schizo_migrate_local_watch(orte_proc_t *proc, struct schizo_migrate_watch *w);
void schizo_migrate_local_remove(orte_proc_t *proc);
void schizo_migrate_local_add(orte_proc_t *proc, pid_t pid);
void schizo_migrate_local_reattach(orte_proc_t *proc, bool exited, int status);
void schizo_migrate_local_reserve(orte_jobid_t job, int delta);
void schizo_migrate_local_launched(orte_proc_t *proc, int delta);
int schizo_migrate_local_start_time(pid_t pid, unsigned long long *start);
int schizo_migrate_local_session_dumpable(pid_t pid);
/* Why a rank whose session_dumpable() is 0 is refused, and the fix. */
#define SCHIZO_MIGRATE_UNDUMPABLE_SESSION "inspect: the rank's session leader is outside its " \
    "pid namespace, so CRIU cannot dump it; start mpirun under setsid, or without " \
    "--leave-session-attached"
/* 0 if pid is free here, or is the process that started at start (the same one seen through a
 * PID namespace shared with another node); -1 and why otherwise. */
int schizo_migrate_local_pid_check(pid_t pid, unsigned long long start, char *err, size_t len);
#define SCHIZO_MIGRATE_MAX_TIDS 16  /* ids of a rank held across a move (the rest by chance) */
int schizo_migrate_local_tids(pid_t pid, pid_t *ids, int max);
int schizo_migrate_local_tids_parse(const char *list, pid_t *ids, int max);
void schizo_migrate_local_pid_hold(const pid_t *ids, int n);

/* schizo_migrate_text.c: growing text and "key=value" lookups. */
struct schizo_migrate_text {
    char *s;
    size_t len, cap;
};
void schizo_migrate_text_add(struct schizo_migrate_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The value of key in "k1=v1 k2=v2 ..." (up to the next blank) into buf; 0 if found. */
int schizo_migrate_kv(const char *text, const char *key, char *buf, size_t len);
double schizo_migrate_kv_num(const char *text, const char *key, double dflt);

/* schizo_migrate_component.c: fault injection for tests ("PHASE:RANK" in fail). */
bool schizo_migrate_fault(const char *phase, orte_vpid_t vpid);

/* The environment variable that tells a rank where its node's control socket is. */
#define SCHIZO_MIGRATE_CTL_ENV "OMPI_MIGRATE_CTL"

END_C_DECLS

#endif /* MCA_SCHIZO_MIGRATE_H */
