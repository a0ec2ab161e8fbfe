/* mpscan.h - incremental msgpack structure check that runs ahead of msgpack-c's unpacker,
 * so announced lengths cannot make the unpacker allocate beyond a per-message limit. */
#ifndef KUMO_MPSCAN_H
#define KUMO_MPSCAN_H

#include <stddef.h>
#include <stdint.h>

/* msgpack-c's own nesting limit (MSGPACK_EMBED_STACK_SIZE): it refuses a container header
 * while 32 non-empty containers are open, so the scanner stops the same input. */
#define MPSCAN_MAX_DEPTH 32

/* The largest message any reader of the system takes (RPC connections of the daemons and
 * tools, one pair of a replace stream): a larger message, read or announced, closes the
 * connection.  The one home of this limit. */
#define MPSCAN_MESSAGE_MAX (64u * 1024 * 1024)

enum mpscan_error {
    MPSCAN_OK = 0,
    MPSCAN_BAD_BYTE,     /* 0xc1: the one type byte msgpack never uses */
    MPSCAN_TOO_LARGE,    /* announced lengths/counts cannot fit in max_message bytes */
    MPSCAN_TOO_MANY,     /* more than max_elems objects announced in one message */
    MPSCAN_TOO_DEEP      /* more than MPSCAN_MAX_DEPTH nested containers */
};

/* Scanner state, owned by the caller (e.g. embedded in a connection).  The fields are
 * private; they are visible only so the state can live inside another struct. */
typedef struct mpscan {
    uint8_t state;                 /* what the next byte is: a type byte, a length byte, payload */
    uint8_t trail;                 /* length bytes still to read */
    uint8_t kind;                  /* what the length being read announces */
    uint8_t err;                   /* sticky enum mpscan_error */
    uint32_t arg;                  /* big-endian length accumulated so far */
    uint32_t depth;                /* open non-empty containers */
    uint32_t max_message;          /* limits given to mpscan_init */
    uint64_t max_elems;
    uint64_t skip;                 /* payload bytes to pass over before the object ends */
    uint64_t seen;                 /* bytes of the current message passed so far */
    uint64_t owed;                 /* least number of bytes that must still come */
    uint64_t elems;                /* objects announced by containers in this message */
    uint64_t fed;                  /* bytes of the stream checked so far */
    uint64_t ended;                /* stream offset just past the last complete message */
    uint32_t left[MPSCAN_MAX_DEPTH]; /* objects still to come in each open container */
} mpscan;

/* Start scanning a new byte stream of back-to-back msgpack messages (top-level objects).
 * A message may be at most max_message bytes (1 .. UINT32_MAX) and its arrays and maps
 * may announce at most max_elems objects in total (a map pair counts two), which bounds
 * what msgpack-c allocates for it (one msgpack_object per element) before the elements
 * arrive.  Nothing to destroy. */
void mpscan_init(mpscan *s, size_t max_message, uint32_t max_elems);

/* Check the next len bytes of the stream, given in order and only once each (any split
 * is fine; the scanner never looks back).  Returns MPSCAN_OK if the stream so far can
 * still be valid msgpack within the limits, otherwise the reason; an error is sticky and
 * returned by every later call.  Typically called on freshly read bytes before they are
 * handed to msgpack_unpacker. */
enum mpscan_error mpscan_execute(mpscan *s, const void *data, size_t len);

/* The stream offset (bytes since mpscan_init) just past the last complete top-level
 * message checked so far: the bytes before it can be decoded without waiting. */
static inline uint64_t mpscan_complete(const mpscan *s) { return s->ended; }

/* The least size of the message in progress (0 when none is): how much input a reader
 * may wait for before decoding it. */
static inline uint64_t mpscan_message_need(const mpscan *s)
{
    return s->seen ? s->seen + s->owed : 0;
}

/* A static, human-readable name for e ("too deep"). */
const char *mpscan_strerror(enum mpscan_error e);

#endif
