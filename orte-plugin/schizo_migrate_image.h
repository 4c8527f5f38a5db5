/*
 * Dump/transfer/restore glue (schizo_migrate_image.c): work items run in a helper thread, the
 * stdio keys of a rank and the manifest kept with its images.
 */
#ifndef SCHIZO_MIGRATE_IMAGE_H
#define SCHIZO_MIGRATE_IMAGE_H

#include "orte_config.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "opal/mca/event/event.h"
#include "orte/types.h"

#include "omig_criu.h"
#include "omig_delta.h"
#include "omig_store.h"
#include "omig_xfer.h"

/* CRIU's names of what fds 0, 1, 2 of the rank are ("" for anything CRIU restores by
 * itself, such as /dev/null). */
struct schizo_migrate_stdio {
    char key[3][64];
};

struct schizo_migrate_manifest {
    orte_process_name_t name;
    pid_t pid;
    unsigned long long start;     /* /proc/PID/stat start time: pid + start = one process */
    struct schizo_migrate_stdio io;
    unsigned long ctl_ino;        /* the rank's end of its control link (0: it has none) */
};

/* DUMP_SEND: a move (CRIU kills the rank, the images go to the new node); DUMP: a checkpoint
 * (the rank runs on); SUMS: the checksums of its images (transfer_ms: their time); RECV: the
 * new node's receiver; RESTORE. */
enum schizo_migrate_work_kind { SM_WORK_DUMP_SEND, SM_WORK_DUMP, SM_WORK_SUMS, SM_WORK_RECV,
                                SM_WORK_RESTORE };

/* One blocking job for a helper thread. Inputs are set by the caller, outputs by the thread;
 * done() runs in ORTE's event thread afterwards. The owner keeps it alive until then. */
struct schizo_migrate_work {
    opal_event_t ev;
    enum schizo_migrate_work_kind kind;
    void (*done)(struct schizo_migrate_work *w);
    void *owner;
    /* inputs */
    char dir[4096];
    pid_t pid;                          /* DUMP*: the rank */
    struct schizo_migrate_stdio io;     /* DUMP*: its ttys are external */
    unsigned long ctl_ino;              /* DUMP*: so is its control link, if any */
    char addr[64];                      /* DUMP_SEND: the receiver */
    uint16_t port;
    bool stream;                        /* DUMP_SEND: pages go during the dump (page server) */
    char key[OMIG_XFER_KEY_HEX];        /* DUMP_SEND, RECV: the transfer's key (from mpirun) */
    int lfd;                            /* RECV: listening socket */
    char parent[64];                    /* SUMS: the previous checkpoint ("": store whole) */
    int timeout_ms;                     /* RECV: wait for the sender */
    struct omig_inherit_fd inherit[4];  /* RESTORE: new stdio and control link */
    size_t n_inherit;
    bool fail_dump, fail_transfer, fail_restore;    /* tests: schizo_migrate_fail */
    bool die_receiving, die_restoring;              /* tests: this node dies then */
    /* outputs */
    int rc;                             /* 0 or -1 with err ("PHASE: why" for DUMP_SEND) */
    char err[1024];
    bool dumped;                        /* DUMP_SEND: CRIU wrote the image (the rank is dead) */
    struct omig_sums sums;              /* SUMS: what the images hold */
    struct omig_delta_stats delta;      /* SUMS: pages, and those stored */
    double dump_ms, transfer_ms, restore_ms;
    struct omig_xfer_stats st;
    volatile int finished;              /* set by the thread before the thread-shift: finalize,
                                         * when the event loop is gone, polls it */
};

int schizo_migrate_image_start(struct schizo_migrate_work *w);
/* Before anything is frozen: is this node's CRIU there and new enough? 0, or -1 with
 * "PHASE: why and the fix" in err. */
int schizo_migrate_image_criu_check(const char *phase, char *err, size_t len);
/* Finalize only (no event loop any more): wait up to ms for the helper thread's end. */
bool schizo_migrate_image_wait(struct schizo_migrate_work *w, int ms);

/* <control dir>/images/<family>-<daemon>-r<rank>-m<move>-<role>, created 0700. */
int schizo_migrate_image_dir(char *buf, size_t len, const orte_process_name_t *name,
                             uint32_t id, const char *role);
void schizo_migrate_image_remove(const char *dir);

int schizo_migrate_image_stdio_probe(pid_t pid, struct schizo_migrate_stdio *io);
int schizo_migrate_image_manifest_write(const char *dir,
                                        const struct schizo_migrate_manifest *m);
/* strerror(-rc) of a write into dir; for ENOSPC (in buf) which file system, where, how full,
 * and the fix. */
const char *schizo_migrate_image_strerror(const char *dir, int rc, char *buf, size_t len);
int schizo_migrate_image_manifest_read(const char *dir, struct schizo_migrate_manifest *m);

#endif
