/* Logging of the library and the CLI: levels like CRIU's pr_err/pr_warn/pr_info/pr_debug. */
#ifndef OMIG_LOG_H
#define OMIG_LOG_H

enum omig_log_level { OMIG_LOG_ERR = 1, OMIG_LOG_WARN, OMIG_LOG_INFO, OMIG_LOG_DEBUG };

extern int omig_log_level;

void omig_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define omig_err(...)   omig_log(OMIG_LOG_ERR, __VA_ARGS__)
#define omig_warn(...)  omig_log(OMIG_LOG_WARN, __VA_ARGS__)
#define omig_info(...)  omig_log(OMIG_LOG_INFO, __VA_ARGS__)
#define omig_debug(...) omig_log(OMIG_LOG_DEBUG, __VA_ARGS__)

#endif
