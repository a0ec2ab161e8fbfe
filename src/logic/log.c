/* log.c - text logger: one flushed line per message, optional ANSI colours. */
#include "logic/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static FILE *log_fp;
static char *log_path;
static bool log_colour = true;
static enum log_level log_threshold = LOG_WARN;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const colour_start[] = {
    "\033[0;39m", "\033[1;37m", "\033[1;32m", "\033[1;33m", "\033[1;35m", "\033[1;31m",
};

int log_open(const char *path, bool verbose, bool colour)
{
    log_threshold = verbose ? LOG_TRACE : LOG_WARN;
    free(log_path);
    log_path = NULL;
    if (log_fp && log_fp != stdout) fclose(log_fp);
    log_fp = stdout;
    log_colour = colour;
    if (path && strcmp(path, "-") == 0) {
        log_colour = false;
    } else if (path) {
        FILE *fp = fopen(path, "a");
        if (!fp) return -1;
        log_fp = fp;
        log_path = strdup(path);
        log_colour = false;
    }
    return 0;
}

void log_reopen(void)
{
    pthread_mutex_lock(&log_lock);
    if (log_path) {
        FILE *fp = fopen(log_path, "a");
        if (fp) {
            if (log_fp && log_fp != stdout) fclose(log_fp);
            log_fp = fp;
        }
    }
    pthread_mutex_unlock(&log_lock);
}

bool log_has_file(void)
{
    return log_path != NULL;
}

bool log_enabled(enum log_level level)
{
    return level >= log_threshold;
}

void log_write(enum log_level level, const char *file, int line, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0) {
        fprintf(stderr, "%s:%d: log error\n", file, line);
        return;
    }
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
    const char *base = strstr(file, "src/");
    base = base ? base + 4 : file;

    pthread_mutex_lock(&log_lock);
    FILE *fp = log_fp ? log_fp : stdout;
    if (log_colour)
        fprintf(fp, "%s%s %s:%d: %s\033[0;39m\n", colour_start[level], ts, base, line, msg);
    else
        fprintf(fp, "%s %s:%d: %s\n", ts, base, line, msg);
    fflush(fp);
    pthread_mutex_unlock(&log_lock);
}
