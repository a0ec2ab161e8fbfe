/* binlog.h - the binary "logpack" log of cli.md §10 (-g path.mpac): length-prefixed
 * msgpack records [name_code, version, {key_code: value, ...}] that kumolog reads. */
#ifndef KUMO_BINLOG_H
#define KUMO_BINLOG_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "logic/addr.h"
#include "logic/clocktime.h"

/* Open the process-wide binary log: O_WRONLY|O_APPEND|O_CREAT, mode 0640.  The path is
 * remembered for binlog_reopen.  Replaces a log already open.  Returns 0, or -1 with
 * errno set (nothing is logged then).  Thread-safe, like every function here. */
int binlog_open(const char *path);

/* Re-open the same path (SIGHUP after logrotate renamed the file).  No-op (0) when no
 * log is open.  Returns 0, or -1 with errno set; the old descriptor stays in use then. */
int binlog_reopen(void);

/* Close the log; later records are dropped. */
void binlog_close(void);

/* True while a log is open. */
bool binlog_is_open(void);

/* The name/key code of cli.md §10: up to 4 ASCII characters packed big-endian into an
 * unsigned int ("SM" = 0x534D, "time" = 0x74696D65). */
uint32_t binlog_code(const char *name);

/* Tests: replace time(NULL) as the source of every record's `time` (NULL restores it). */
void binlog_set_time_source(uint32_t (*now)(void));

/* ---- record builder ----
 * binlog_begin(&r, "SM", 2); binlog_add_uint(&r, "time", t); ...; binlog_commit(&r);
 * Keys appear in the map in the order they are added.  When no log is open at
 * binlog_begin the builder is inert (every call is a cheap no-op).  binlog_commit always
 * releases the builder's memory; binlog_discard releases it without writing. */
typedef struct binlog_rec {
    bool active;                 /* false: no log open, calls are no-ops */
    uint32_t name;               /* name code */
    unsigned version;
    uint32_t nkeys;              /* map entries added so far */
    msgpack_sbuffer body;        /* packed key/value pairs, map header added at commit */
    msgpack_packer pk;           /* writes into body */
} binlog_rec;

void binlog_begin(binlog_rec *r, const char *name, unsigned version);
void binlog_add_uint(binlog_rec *r, const char *key, uint64_t v);
void binlog_add_u64(binlog_rec *r, const char *key, uint64_t v);   /* hash, cktm */
void binlog_add_int(binlog_rec *r, const char *key, int64_t v);    /* err codes */
void binlog_add_raw(binlog_rec *r, const char *key, const void *p, size_t n);
void binlog_add_str(binlog_rec *r, const char *key, const char *s); /* raw of strlen(s) */
/* 6-byte raw (port BE + IPv4); an unset address is written as 6 zero bytes. */
void binlog_add_addr(binlog_rec *r, const char *key, const kaddr *a);
/* `time` = now, in unix seconds (every record of the table starts with it). */
void binlog_add_time(binlog_rec *r);

/* Frame the record (u32 BE length + [name, version, map]) and append it with one write
 * loop under the log's lock.  Returns 0, or -1 if the write failed (or no log). */
int binlog_commit(binlog_rec *r);
void binlog_discard(binlog_rec *r);

/* ---- the records of cli.md §10 (exact key order and versions; no-ops without a log).
 * Keys/values are user data without kumofs headers: key without the 8-byte hash (the
 * gateway's --key-prefix included), val without the 10-byte value header. */

/* SM.2 time, addr, Padd (partner; NULL or unset = zero address). */
void binlog_manager_start(const kaddr *addr, const kaddr *partner);
/* SS.2 time, addr, db (-s string), mgr1, mgr2, sadd (stream address), tmpd (-f),
 * bkup (backup basename = db + "-"). */
void binlog_server_start(const kaddr *addr, const char *db, const kaddr *mgr1,
                         const kaddr *mgr2, const kaddr *stream_addr, const char *tmpdir);
/* SW.2 time, mgr1, mgr2. */
void binlog_gateway_start(const kaddr *mgr1, const kaddr *mgr2);
/* eP.3 / nS.3 / lS.3: time, addr. */
void binlog_unknown_partner(const kaddr *addr);
void binlog_new_server(const kaddr *addr);
void binlog_lost_server(const kaddr *addr);
/* ers.4 time, key, val, hash, cktm, to. */
void binlog_replicate_set_failed(const void *key, size_t klen, const void *val, size_t vlen,
                                 uint64_t hash, clocktime_t cktm, const kaddr *to);
/* erd.4 time, key, hash, to. */
void binlog_replicate_delete_failed(const void *key, size_t klen, uint64_t hash,
                                    const kaddr *to);
/* eg.3 / es.3 / ed.3: time, key, [val,] err (the numeric RPC error code). */
void binlog_get_failed(const void *key, size_t klen, int err);
void binlog_set_failed(const void *key, size_t klen, const void *val, size_t vlen, int err);
void binlog_delete_failed(const void *key, size_t klen, int err);

#endif
