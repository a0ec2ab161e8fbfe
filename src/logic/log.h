/* log.h - the text log of cli.md §9: levels, colours, `-o file`, `-v`. */
#ifndef KUMO_LOG_H
#define KUMO_LOG_H

#include <stdbool.h>

enum log_level { LOG_TRACE = 0, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_FATAL };

/* Configure the logger.  path NULL: stdout with colours (cli.md §9.2); "-": stdout
 * without colours; otherwise the file is opened for append (created if missing).
 * verbose: threshold INFO (our TRACE/DEBUG are kept but only with verbose), else WARN.
 * Returns 0, or -1 with errno set when the file cannot be opened. */
int log_open(const char *path, bool verbose, bool colour);

/* Re-open the log file (SIGHUP); no-op for stdout. */
void log_reopen(void);

/* True when -o gave the log a file (not stdout). */
bool log_has_file(void);

/* Current threshold, for callers that want to skip building expensive messages. */
bool log_enabled(enum log_level level);

/* Write one line: "YYYY-MM-DD HH:MM:SS file:line: message".  Thread-safe. */
void log_write(enum log_level level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define LOG_AT(lv, ...) do { if (log_enabled(lv)) log_write((lv), __FILE__, __LINE__, __VA_ARGS__); } while (0)
#define log_trace(...) LOG_AT(LOG_TRACE, __VA_ARGS__)
#define log_debug(...) LOG_AT(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  LOG_AT(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  LOG_AT(LOG_WARN, __VA_ARGS__)
#define log_error(...) LOG_AT(LOG_ERROR, __VA_ARGS__)
#define log_fatal(...) LOG_AT(LOG_FATAL, __VA_ARGS__)

#endif
