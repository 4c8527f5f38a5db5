/*
 * Run CRIU for check, dump and restore: fork + execv of the criu binary with an argv array
 * (never a shell). CRIU's own log goes into the image directory (dump.log, restore.log) and its
 * stdout/stderr into criu-<action>.out there; on failure the error string holds the last error
 * line of that log, so the caller can show why without opening files.
 *
 * Every function returns 0 (or a pid) on success and -1 on failure with `err` filled.
 */
#ifndef OMIG_CRIU_H
#define OMIG_CRIU_H

#include <stddef.h>
#include <sys/types.h>

/* The oldest CRIU that can dump TCP sockets on kernels >= 6.16 (upstream issue #2705). */
#define OMIG_CRIU_MIN_MAJOR 4
#define OMIG_CRIU_MIN_MINOR 2

/* Which criu binary to run. Without a call: env OMPI_MIGRATE_CRIU, else the configure-time
 * OMIG_CRIU_DEFAULT, else "criu" looked up on PATH. NULL resets to that default. */
void omig_criu_set_binary(const char *path);
/* The binary that will run, as an absolute path when found (NULL if not found at all). */
const char *omig_criu_binary(void);

/* `criu --version`: fills "4.2.1" into version; 0 if it ran. */
int omig_criu_version(char *version, size_t vlen, char *err, size_t len);
/* 1 if version string a.b[.c] is >= OMIG_CRIU_MIN_MAJOR.OMIG_CRIU_MIN_MINOR. */
int omig_criu_version_ok(const char *version);
/* What to do about a missing or unusable criu binary. */
#define OMIG_CRIU_FIX "run scripts/setup-criu.sh, or set OMPI_MIGRATE_CRIU"
/* Is there a criu binary, and is it new enough? 0, or -1 with err naming the version, node
 * (this host's name) and binary and the fix. Asking forks criu: a binary found good is not asked
 * again while its path, inode and modification time stay the same. */
int omig_criu_usable(char *err, size_t len);
/* `criu check`: everything CRIU needs from the kernel for a plain dump/restore. */
int omig_criu_check(char *err, size_t len);
/* `criu check --feature NAME` (e.g. "network_lock_nftables", "uffd-noncoop"). */
int omig_criu_check_feature(const char *feature, char *err, size_t len);

/* `--inherit-fd fd[FD]:KEY` at restore: FD is open in the caller and stands for the resource
 * the images name KEY (e.g. "tty[8800:d]", "pipe:[12345]"); it is passed to criu as is. */
struct omig_inherit_fd {
    int fd;
    const char *key;
};

struct omig_dump_opts {
    pid_t pid;                  /* root of the tree to dump */
    const char *image_dir;      /* created 0700 if missing; image files made 0600 after dump */
    int leave_running;          /* else CRIU kills the tree after a successful dump */
    int shell_job;              /* tree is not a session leader (e.g. an MPI rank) */
    int tcp_established;        /* dump established TCP connections (repair mode) */
    int network_lock_nftables;  /* --network-lock nftables (Debian 12 has no iptables binary) */
    const char *const *external; /* NULL-terminated --external values, e.g. "tty[8800:d]" */
    const char *cpu_cap;        /* --cpu-cap=VALUE ("cpu", "fpu", ...); NULL: not passed */
    int ps_socket;              /* > 2: pages go down this connected socket to a `criu
                                 * page-server` (omig_criu_page_server) instead of to files */
    int verbosity;              /* CRIU's -v level; 0 means 4 (debug log: needed to diagnose) */
};

struct omig_restore_opts {
    const char *image_dir;
    int detached;               /* -d: criu returns once the tree runs */
    int restore_sibling;        /* -S: the tree becomes the CALLER's child (with -d), to reap it */
    int leave_stopped;          /* tree stays stopped: caller sends SIGCONT when ready */
    int shell_job;
    int tcp_established;
    int network_lock_nftables;
    const char *cpu_cap;
    const struct omig_inherit_fd *inherit_fds;
    size_t n_inherit_fds;
    const char *pidfile;        /* where criu writes the root pid; NULL: IMAGE_DIR/restore.pid */
    int verbosity;
};

/* -ENOSPC when the image directory's file system is full (err says which, where, how full). */
int omig_criu_dump(const struct omig_dump_opts *o, char *err, size_t len);
/* The receiving end of a dump's ps_socket: `criu page-server` writes the pages arriving on
 * SOCK (connected, > 2) into IMAGE_DIR and returns once the dump has closed the session,
 * leaving SOCK open for what follows. */
int omig_criu_page_server(int sock, const char *image_dir, char *err, size_t len);
/* Returns the pid of the restored root task, or -1. */
pid_t omig_criu_restore(const struct omig_restore_opts *o, char *err, size_t len);

#endif
