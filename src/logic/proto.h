/* proto.h - RPC method numbers and flag words of kumofs 0.4.13 (wire.md §7.7, §8).
 * Each daemon has its own number space; the receiver decides the meaning. */
#ifndef KUMO_PROTO_H
#define KUMO_PROTO_H

/* Handled by kumo-manager (wire.md §8.1). */
enum manager_method {
    MGR_KEEP_ALIVE = 0,
    MGR_HASH_SPACE_REQUEST = 1,
    MGR_HASH_SPACE_SYNC = 2,
    MGR_WHASH_SPACE_REQUEST = 4,
    MGR_RHASH_SPACE_REQUEST = 5,
    MGR_REPLACE_COPY_END = 10,
    MGR_REPLACE_DELETE_END = 11,
    MGR_REPLACE_ELECTION = 12,
    MGR_GET_NODES_INFO = 99,
    MGR_ATTACH_NEW_SERVERS = 100,
    MGR_DETACH_FAULT_SERVERS = 101,
    MGR_CREATE_BACKUP = 102,
    MGR_SET_AUTO_REPLACE = 103,
    MGR_START_REPLACE = 104,
};

/* Handled by kumo-server (wire.md §8.2). */
enum server_method {
    SRV_KEEP_ALIVE = 0,
    SRV_HASH_SPACE_SYNC = 2,
    SRV_REPLACE_COPY_START = 8,
    SRV_REPLACE_DELETE_START = 9,
    SRV_REPLACE_OFFER = 16,
    SRV_REPLICATE_SET = 32,
    SRV_REPLICATE_DELETE = 33,
    SRV_GET = 34,
    SRV_SET = 35,
    SRV_DELETE = 36,
    SRV_GET_IF_MODIFIED = 37,
    SRV_UPDATE = 48,             /* kumofs-c: read-modify-write (doc/protocol-additions.md) */
    SRV_FLUSH = 49,              /* kumofs-c: flush_all (doc/protocol-additions.md) */
    SRV_GET_VERSION = 50,        /* kumofs-c: a record's stored version, tombstones too */
    SRV_FORWARD = 51,            /* kumofs-c: relay a write to its coordinator (relay.c) */
    SRV_CREATE_BACKUP = 96,
    SRV_GET_STATUS = 97,
    SRV_SET_CONFIG = 98,
};

/* Handled by kumo-gateway (wire.md §8.3). */
enum gateway_method {
    GW_HASH_SPACE_PUSH = 3,
};

/* Set.operation (wire.md §7.7). */
enum set_op {
    SET_OP_SET = 0,
    SET_OP_SET_ASYNC = 1,
    SET_OP_CAS = 2,
    SET_OP_APPEND = 4,      /* declared by the original, rejected with error 5 */
    SET_OP_PREPEND = 8,
};

/* Update.op (kumofs-c, doc/protocol-additions.md): memcached read-modify-write commands. */
enum update_op {
    UPDATE_OP_ADD = 1,
    UPDATE_OP_REPLACE = 2,
    UPDATE_OP_APPEND = 3,
    UPDATE_OP_PREPEND = 4,
    UPDATE_OP_CAS = 5,
    UPDATE_OP_INCR = 6,
    UPDATE_OP_DECR = 7,
    UPDATE_OP_TOUCH = 8,
};

/* Update result status (kumofs-c). */
enum update_status {
    UPDATE_STORED = 0,           /* TOUCH: touched; INCR/DECR: value = new number */
    UPDATE_NOT_STORED = 1,
    UPDATE_EXISTS = 2,
    UPDATE_NOT_FOUND = 3,
    UPDATE_NON_NUMERIC = 4,
    UPDATE_CREATED = 5,          /* INCR/DECR with UPDATE_FLAG_CREATE made the item */
};

#define MC_KEY_MAX 250             /* memcached's key length limit, every front end */

#define UPDATE_FLAG_ASYNC 0x01     /* Update.flags: reply before replication completes */
#define UPDATE_FLAG_RAW 0x02       /* Update.flags: a flags-0, no-expiry result may be stored
                                    * in the original's raw form (doc/storage-format.md) */
#define UPDATE_FLAG_VALUE 0x04     /* Update.flags, TOUCH/INCR/DECR: the reply carries the
                                    * whole new DBValue */
#define UPDATE_FLAG_CREATE 0x08    /* Update.flags, INCR/DECR: a missing item is created with
                                    * the request's value (the initial number), in one step */
#define UPDATE_FLAG_TTL 0x10       /* Update.flags, INCR/DECR: the request's exptime replaces
                                    * the item's */

#define STORE_FLAG_ASYNC 0x01      /* Delete.flags: reply before replication completes */
#define REPLICATE_FLAG_BY_RHS 0x01 /* Replicate*.flags: validate against rhs */
/* ReplicateDelete.flags, kumofs-c: the coordinator reads the three-form reply (true: a
 * live value was there, 1: stored over nothing live, false: refused; protocol-additions.md) */
#define REPLICATE_FLAG_LIVE_REPLY 0x02
/* ReplicateSet.flags, kumofs-c: the coordinator re-stamps a write its replica refused
 * (GetVersion, protocol-additions.md §1.3).  Without it (an original coordinator, which
 * counts `false` as stored) a replica refuses a strictly older version with an error. */
#define REPLICATE_FLAG_RESTAMP 0x04
/* ReplicateSet/ReplicateDelete reply, kumofs-c, only to a coordinator that set 0x04 (Set) or
 * 0x02 (Delete): refused because the replica holds a DIFFERENT write with exactly the
 * incoming version (two coordinators stamped the same clocktime).  The coordinator
 * re-stamps past it as for a newer version (protocol-additions.md §1.3). */
#define REPLICATE_REPLY_COLLIDED 2

/* GetStatus commands (wire.md §9). */
enum status_cmd {
    STATUS_PID = 0, STATUS_UPTIME = 1, STATUS_TIME = 2, STATUS_VERSION = 3,
    STATUS_CMD_GET = 4, STATUS_CMD_SET = 5, STATUS_CMD_DELETE = 6, STATUS_ITEMS = 7,
    STATUS_CLOCKTIME = 8, STATUS_RHS = 9, STATUS_WHS = 10, STATUS_REPLSTAT = 11,
    /* kumofs-c: the additions this server speaks (STATUS_EXT_*); an original answers nil
     * to an unknown code and keeps the connection (an unknown *method* drops it) */
    STATUS_EXTENSIONS = 48,
};
#define STATUS_EXT_V1 0x01   /* Update, Flush, GetVersion, tombstones in replace streams */
#define STATUS_EXT_FORWARD 0x02   /* Forward (51): relays a write to its coordinator */

/* GetStatus replstat bits. */
#define REPLSTAT_INACTIVE 0x01
#define REPLSTAT_HS_DIFFER 0x02
#define REPLSTAT_COPYING 0x04
#define REPLSTAT_DELETING 0x08

#define CONF_TCP_NODELAY 0

#define KUMO_VERSION_STRING "0.4.13 revision "

#endif
