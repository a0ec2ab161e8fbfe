/* watch.h - kumo-manager's failure detector for servers (kumofs-c): short heartbeats
 * with a deadline, N misses in a row mark a server fault, and a server that flapped
 * must stay healthy longer before auto-replace attaches it again. */
#ifndef KUMO_MANAGER_WATCH_H
#define KUMO_MANAGER_WATCH_H

#include <ev.h>
#include <stdbool.h>

#include "logic/addr.h"

typedef struct manager manager;
typedef struct mgr_watch mgr_watch;

typedef struct watch_config {
    double timeout;     /* -Ws: a heartbeat unanswered after this many seconds is a miss;
                         * heartbeats go out every timeout/2 */
    unsigned misses;    /* -Wn: misses in a row that mark the server fault; 0 = detector
                         * off (only the original's 2 s keepalive, 6 failures of 10 steps) */
    unsigned recover;   /* -Wr: answered heartbeats in a row before auto-replace attaches a
                         * returning server; doubled for each fault in the last minute */
} watch_config;

/* Start the detector for m on loop (cfg copied).  Returns NULL when cfg->misses is 0.
 * Release with watch_free. */
mgr_watch *watch_new(manager *m, struct ev_loop *loop, const watch_config *cfg);
void watch_free(mgr_watch *w);

/* Is the detector running (w non-NULL)? */
static inline bool watch_enabled(const mgr_watch *w) { return w != NULL; }

/* A server was declared lost (by the detector or because its connection failed):
 * remembered for flap damping. */
void watch_server_lost(mgr_watch *w, const kaddr *a);

/* May auto-replace attach this returning server now?  False while it has not answered
 * enough heartbeats in a row since it came back (always true with the detector off). */
bool watch_may_attach(mgr_watch *w, const kaddr *a);

#endif
