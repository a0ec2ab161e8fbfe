/* store.h - the server's record store: a Tokyo Cabinet hash database holding the record
 * layout of storage.md §2, with store-if-newer, tombstones, CAS, the tombstone garbage
 * queue (§5), backup (§6) and flush_all.  Every function takes the store's lock, so the
 * replace and backup threads may call them beside the event loop. */
#ifndef KUMO_STORE_H
#define KUMO_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "logic/clocktime.h"

typedef struct store store;

/* Open (create if missing) "path[#xmsiz=..][#rcnum=..]" (storage.md §1.1).  On failure
 * returns NULL and writes a message naming the path and TC's error text to err. */
store *store_open(const char *spec, char *err, size_t errlen);

/* Close the database (flushes everything). */
void store_close(store *st);

/* Tombstone garbage parameters (-gN, -gX seconds, -gS KiB; storage.md §5.1).
 * min is lowered to max if larger. */
void store_set_garbage(store *st, uint32_t min_sec, uint32_t max_sec, size_t mem_limit_kib);

/* The raw stored value (live value or tombstone) copied into a malloc'd buffer the caller
 * frees; NULL if absent.  *vlen gets the length. */
void *store_get(store *st, const void *key, size_t klen, size_t *vlen);

/* The stored version: true and *ct if a value of >= 8 bytes (live or tombstone) exists. */
bool store_get_clocktime(store *st, const void *key, size_t klen, clocktime_t *ct);

/* Plain overwrite (coordinator Set, storage.md §4.2).  Returns false on a storage error. */
bool store_put(store *st, const void *key, size_t klen, const void *val, size_t vlen);

/* Store-if-newer (storage.md §4.1); val's first 8 bytes are its clocktime (a value of
 * exactly 8 bytes is a tombstone).  Returns true if stored. */
bool store_update(store *st, const void *key, size_t klen, const void *val, size_t vlen);

/* Delete: store-if-newer of the tombstone BE64(ct) (storage.md §4.3); on success also
 * queues the garbage entry and advances the garbage queue.  Returns true if deleted. */
bool store_remove(store *st, const void *key, size_t klen, clocktime_t ct);

/* CAS (storage.md §4.4): store val if the key is absent or its stored clocktime equals
 * compare exactly.  Returns true if stored. */
bool store_cas(store *st, const void *key, size_t klen, const void *val, size_t vlen,
               clocktime_t compare);

/* Why this thread's last put/update/remove/cas returned false: 0 when its condition
 * refused it (an equal or newer version stored, CAS mismatch), ENOSPC when the disk has
 * no room for the record (nothing was written; a later call retries), EIO for another
 * storage failure. */
int store_error(void);

/* Unconditionally remove a record (replace delete phase). */
bool store_erase(store *st, const void *key, size_t klen);

/* Number of records, tombstones included (TC rnum). */
uint64_t store_count(store *st);

/* Iterate all live records (storage.md §5.2): values < 8 bytes are deleted; tombstones
 * are skipped, and deleted if older than purge_limit (0 = never purge).  fn gets
 * borrowed key/value; return false from fn to stop.  fn may call store_erase on the
 * current key.  Returns the number of live records visited. */
typedef bool (*store_iter_fn)(const void *key, size_t klen, const void *val, size_t vlen, void *ud);
uint64_t store_iterate(store *st, clocktime_t purge_limit, store_iter_fn fn, void *ud);

/* As store_iterate, but the surviving tombstones (8- or 9-byte values not older than
 * purge_limit) are handed to fn too and counted as visited: kumofs-c's replace copy
 * transfers them so that a server restarted on an old database loses the values it
 * missed deletes for (DECISIONS.md §2). */
uint64_t store_iterate_all(store *st, clocktime_t purge_limit, store_iter_fn fn, void *ud);

/* ---- backup (storage.md §6) ----
 * A backup is a dump of the store written into a fresh TC file.  The dump hands out
 * every record (tombstones included) and then, again, the records of the keys written
 * while it walked: the file ends up holding every record present throughout the dump, at
 * a version at least as new as at its start.  The server runs the dump on its event
 * loop in short steps and the copy on a thread of its own. */

typedef struct store_dump store_dump;

/* Begin a dump: from now on the store notes the keys written.  Release with
 * store_dump_free. */
store_dump *store_dump_start(store *st);

/* Receives a dumped record, borrowed until it returns; val NULL: the key is gone. */
typedef void (*store_dump_fn)(const void *key, size_t klen, const void *val, size_t vlen,
                              void *ud);

/* Hand out records to fn until about max_bytes or max_sec are used up.  Returns 1 while
 * records remain, 0 when the dump is complete, -1 on a read error (err filled). */
int store_dump_step(store *st, store_dump *d, size_t max_bytes, double max_sec,
                    store_dump_fn fn, void *ud, char *err, size_t errlen);

/* End the dump, complete or not, and free it. */
void store_dump_free(store *st, store_dump *d);

/* The backup file: dst.tmp, created and tuned like the live database.  Any thread; st
 * is read once.  NULL with err filled on failure.  Release with store_copy_commit or
 * store_copy_abort. */
typedef struct store_copy store_copy;
store_copy *store_copy_create(store *st, const char *dst, char *err, size_t errlen);

/* Store a dumped record in the copy (val NULL removes the key).  false, err filled, on
 * a write failure. */
bool store_copy_put(store_copy *c, const void *key, size_t klen, const void *val,
                    size_t vlen, char *err, size_t errlen);

/* Close dst.tmp, fsync it and rename it to dst.  Frees c.  Returns 0, or -1 with err
 * filled (and dst.tmp removed). */
int store_copy_commit(store_copy *c, char *err, size_t errlen);

/* Drop the copy: close and remove dst.tmp.  Frees c. */
void store_copy_abort(store_copy *c);

/* A whole backup to dst on the calling thread (dump + copy + commit), the store lock
 * taken per record so that other threads go on.  Returns 0, or -1 with err filled. */
int store_backup(store *st, const char *dst, char *err, size_t errlen);

/* Begin flush_all at horizon, the flush moment (protocol-additions.md §1.2).  From the
 * return on, every live record not newer than horizon and not written since reads as
 * its flush tombstone (its version with the logical clock + 1): the store turns it into
 * that tombstone before any read, write or iteration sees it.  A write made after this
 * call survives whatever its version.  The file itself is rewritten by
 * store_flush_step.  A flush begun while one is running takes the later horizon and
 * starts the walk again. */
void store_flush_begin(store *st, clocktime_t horizon);

/* Walk the running flush on by up to max_records records, stopping early once about
 * max_sec seconds have passed.  Returns true while records remain; *flushed gets the
 * number of records tombstoned by the flush so far. */
bool store_flush_step(store *st, size_t max_records, double max_sec, uint64_t *flushed);

#endif
