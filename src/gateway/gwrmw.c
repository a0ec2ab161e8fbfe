/* gwrmw.c - memcached read-modify-write through a coordinator that does not know Update
 * (an original kumofs 0.4.13 server): a loop of Get and compare-and-swap Sets. */
#include "gateway/gateway_internal.h"

#include <stdlib.h>
#include <string.h>

#include "logic/item.h"
#include "logic/kwire.h"
#include "logic/log.h"
#include "logic/proto.h"
#include "logic/record.h"
#include "logic/xmalloc.h"

/* Rounds of Get + CAS before a contended op gives up (SERVER_ERROR). */
#define RMW_ROUNDS_MAX 100
/* How long the kind of a server is trusted.  A server can be replaced by the other kind
 * on the same address during a migration; after this time it is asked again. */
#define GW_PEER_TTL 30.0

/* The table entry of addr, or the slot to take for it: the oldest (or an unused) one. */
static gw_peer *peer_slot(gateway *gw, const kaddr *addr, bool *found)
{
    size_t slot = 0;
    for (size_t i = 0; i < GW_PEERS_MAX; i++) {
        if (gw->peers[i].kind != GW_PEER_UNKNOWN || gw->peers[i].probing
            || gw->peers[i].unreachable) {
            if (kaddr_eq(&gw->peers[i].addr, addr)) {
                *found = true;
                return &gw->peers[i];
            }
        }
        /* an entry being asked, or marked unreachable, is kept */
        bool keep = gw->peers[i].probing || gw->peers[i].unreachable;
        bool slot_kept = gw->peers[slot].probing || gw->peers[slot].unreachable;
        if (!keep && (slot_kept || gw->peers[i].until < gw->peers[slot].until))
            slot = i;
    }
    *found = false;
    return &gw->peers[slot];
}

void gw_peer_set(gateway *gw, const kaddr *addr, int kind)
{
    bool found;
    gw_peer *p = peer_slot(gw, addr, &found);
    if (!found) {
        p->probing = false;
        if (p->unreachable)
            gw->nunreachable--;
        p->unreachable = false;
    }
    if (!found || kind != p->kind)
        p->ext = 0;               /* learnt again by the next probe */
    p->addr = *addr;
    p->kind = kind;
    p->until = ev_now(gw->loop) + GW_PEER_TTL;
}

typedef struct peer_probe {
    gateway *gw;
    kaddr addr;
    void (*cb)(void *);
    void *ud;
} peer_probe;

static void peer_probed(rpc_session *s, const rpc_result *r, void *ud)
{
    peer_probe *p = ud;
    uint32_t ext = 0;
    if (!p->gw->closing) {
        bool found;
        gw_peer *e = peer_slot(p->gw, &p->addr, &found);
        if (found)
            e->probing = false;
        /* a kumofs-c server answers its extension bits, an original nil; no answer (lost,
         * timeout) leaves the kind as it was and the Update goes out as before */
        if (r->err == RPC_OK) {
            bool modern = kwire_get_u32(r->result, &ext) && (ext & STATUS_EXT_V1);
            gw_peer_set(p->gw, &p->addr, modern ? GW_PEER_MODERN : GW_PEER_ORIGINAL);
            peer_slot(p->gw, &p->addr, &found)->ext = modern ? ext : 0;
            gw_peer_set_unreachable(p->gw, &p->addr, false);   /* it answered */
        }
    }
    (void)s;
    if (p->cb)
        p->cb(p->ud);
    free(p);
}

void gw_peer_probe(gateway *gw, rpc_session *s, void (*cb)(void *ud), void *ud)
{
    peer_probe *p = xmalloc(sizeof(*p));
    p->gw = gw;
    p->addr = *rpc_session_addr(s);
    p->cb = cb;
    p->ud = ud;
    msgpack_packer *pk = rpc_call_begin(s, SRV_GET_STATUS, RPC_DEFAULT_TIMEOUT_STEPS,
                                        peer_probed, p);
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint32(pk, STATUS_EXTENSIONS);
    rpc_call_end(s);
}

void gw_peer_refresh(gateway *gw, rpc_session *s)
{
    bool found;
    gw_peer *p = peer_slot(gw, rpc_session_addr(s), &found);
    if (found && (p->probing || p->until > ev_now(gw->loop)))
        return;
    if (!found) {
        p->addr = *rpc_session_addr(s);
        p->kind = GW_PEER_UNKNOWN;
        p->until = 0;
        p->ext = 0;
        if (p->unreachable)
            gw->nunreachable--;
        p->unreachable = false;
    }
    p->probing = true;
    gw_peer_probe(gw, s, NULL, NULL);
}

void gw_peer_set_unreachable(gateway *gw, const kaddr *addr, bool on)
{
    bool found;
    gw_peer *p = peer_slot(gw, addr, &found);
    if (found) {
        if (p->unreachable && !on)
            gw->nunreachable--;
        else if (!p->unreachable && on)
            gw->nunreachable++;
        p->unreachable = on;
    } else if (on) {
        if (p->unreachable)         /* a slot is only taken over when nothing is kept */
            gw->nunreachable--;
        gw->nunreachable++;
        /* a new entry: its kind is asked by the next gw_peer_kind / _relays */
        p->addr = *addr;
        p->kind = GW_PEER_UNKNOWN;
        p->until = 0;
        p->ext = 0;
        p->probing = false;
        p->unreachable = true;
    }
}

bool gw_peer_unreachable(gateway *gw, const kaddr *addr)
{
    bool found;
    gw_peer *p = peer_slot(gw, addr, &found);
    return found && p->unreachable;
}

bool gw_peer_relays(gateway *gw, rpc_session *s)
{
    bool found;
    gw_peer *p = peer_slot(gw, rpc_session_addr(s), &found);
    if (!found || p->until <= ev_now(gw->loop))
        gw_peer_refresh(gw, s);
    return found && p->kind == GW_PEER_MODERN && (p->ext & STATUS_EXT_FORWARD);
}

int gw_peer_kind(gateway *gw, rpc_session *s)
{
    bool found;
    gw_peer *p = peer_slot(gw, rpc_session_addr(s), &found);
    if (!found)
        return GW_PEER_UNKNOWN;
    if (p->until <= ev_now(gw->loop))
        gw_peer_refresh(gw, s);                    /* stale: used, and asked again */
    return p->kind;
}

/* One fallback op.  The rules are item_apply's, the same code the server runs for
 * Update; the atomicity comes from the coordinator's compare of Set's OP_CAS: a Set
 * whose compare version is no longer the stored one fails, and the op reads again. */
typedef struct gw_rmw {
    gateway *gw;
    unsigned op;                 /* UPDATE_OP_* */
    unsigned uflags;             /* UPDATE_FLAG_VALUE / _CREATE / _TTL */
    uint32_t status;             /* item_apply's: UPDATE_STORED or UPDATE_CREATED */
    uint64_t arg;
    gateway_update_cb cb;
    void *ud;
    item req;                    /* data points into buf */
    char *key;                   /* key ‖ request data, one allocation */
    size_t keylen;
    unsigned rounds;
    bool miss_cas_failed;        /* a CAS against "absent" failed on a miss: a tombstone */
    bool on_miss;                /* the Set in flight was made on a miss */
    uint8_t *out;                /* the value being written (item_value_new) */
    size_t outlen;
} gw_rmw;

static void rmw_read(gw_rmw *r);

static void rmw_finish(gw_rmw *r, int status, clocktime_t ct, const char *val, size_t vlen)
{
    if (r->cb)
        r->cb(r->ud, status, ct, val, vlen);
    free(r->out);
    free(r->key);
    free(r);
}

static int gateway_status_of(uint32_t st)
{
    switch (st) {
    case UPDATE_STORED:      return GATEWAY_OK;
    case UPDATE_CREATED:     return GATEWAY_CREATED;
    case UPDATE_NOT_STORED:  return GATEWAY_NOT_STORED;
    case UPDATE_EXISTS:      return GATEWAY_EXISTS;
    case UPDATE_NOT_FOUND:   return GATEWAY_NOT_FOUND;
    case UPDATE_NON_NUMERIC: return GATEWAY_NON_NUMERIC;
    default:                 return GATEWAY_FAILED;
    }
}

static void rmw_stored(void *ud, int status, clocktime_t ct)
{
    gw_rmw *r = ud;
    if (status == GATEWAY_OK) {
        const char *val = NULL;
        size_t vlen = 0;
        item it;
        bool number = r->op == UPDATE_OP_INCR || r->op == UPDATE_OP_DECR;
        if ((number || r->op == UPDATE_OP_TOUCH) && (r->uflags & UPDATE_FLAG_VALUE)) {
            dbvalue_set_clocktime(r->out, ct);     /* the whole new DBValue, as Update's */
            val = (const char *)r->out;
            vlen = r->outlen;
        } else if (number &&
                   item_decode(dbvalue_meta(r->out), r->out + DBVALUE_HEADER_LEN,
                               r->outlen - DBVALUE_HEADER_LEN, gw_item_layout(r->gw), &it)) {
            val = (const char *)it.data;
            vlen = it.len;
        }
        rmw_finish(r, gateway_status_of(r->status), ct, val, vlen);
        return;
    }
    if (status != GATEWAY_EXISTS) {
        rmw_finish(r, GATEWAY_FAILED, 0, NULL, 0);
        return;
    }
    /* the compare failed: someone wrote the key since our read */
    if (r->op == UPDATE_OP_CAS) {
        rmw_finish(r, GATEWAY_EXISTS, 0, NULL, 0);
        return;
    }
    if (r->on_miss)
        r->miss_cas_failed = true;
    if (++r->rounds >= RMW_ROUNDS_MAX) {
        log_warn("update: gave up after %u compare-and-swap rounds", r->rounds);
        rmw_finish(r, GATEWAY_FAILED, 0, NULL, 0);
        return;
    }
    rmw_read(r);
}

static void rmw_got(void *ud, int status, const gateway_value *v, const char *key,
                    size_t keylen)
{
    (void)key;
    (void)keylen;
    gw_rmw *r = ud;
    if (status != GATEWAY_OK && status != GATEWAY_MISS) {
        rmw_finish(r, GATEWAY_FAILED, 0, NULL, 0);
        return;
    }
    gateway_item gi = {0};
    bool live = status == GATEWAY_OK && gateway_item_decode(r->gw, v, &gi);
    item cur = { .flags = gi.flags, .exptime = gi.exptime, .cas = gi.cas, .data = gi.data,
                 .len = gi.len };
    clocktime_t ct = status == GATEWAY_OK ? v->ct : 0;
    free(r->out);
    r->out = NULL;
    uint32_t st = item_apply(r->op, r->uflags, r->arg, live ? &cur : NULL, ct, &r->req,
                             gw_item_layout(r->gw), &r->out, &r->outlen);
    r->status = st;
    if (st != UPDATE_STORED && st != UPDATE_CREATED) {
        rmw_finish(r, gateway_status_of(st), 0, NULL, 0);
        return;
    }
    /* A miss is an absent key or a tombstone.  OP_CAS with compare 0 stores over an
     * absent key only (storage.md §4.4); once it failed on a miss the key is a tombstone
     * whose version Get does not show, and a plain Set is the only way left. */
    r->on_miss = status == GATEWAY_MISS;
    unsigned setop = r->on_miss && r->miss_cas_failed ? SET_OP_SET : SET_OP_CAS;
    gw_set_once(r->gw, r->key, r->keylen, setop, ct, dbvalue_meta(r->out),
                r->out + DBVALUE_HEADER_LEN, r->outlen - DBVALUE_HEADER_LEN, rmw_stored, r);
}

static void rmw_read(gw_rmw *r)
{
    gateway_get(r->gw, r->key, r->keylen, rmw_got, r);
}

void gw_rmw_fallback(gateway *gw, unsigned op, unsigned uflags, const char *key,
                     size_t keylen, const item *req, uint64_t arg, gateway_update_cb cb,
                     void *ud)
{
    gw_rmw *r = xcalloc(1, sizeof(*r));
    r->gw = gw;
    r->op = op;
    r->uflags = uflags;
    r->arg = arg;
    r->cb = cb;
    r->ud = ud;
    r->key = xmalloc(keylen + req->len + 1);
    memcpy(r->key, key, keylen);
    if (req->len)
        memcpy(r->key + keylen, req->data, req->len);
    r->keylen = keylen;
    r->req = *req;
    r->req.data = (const uint8_t *)r->key + keylen;
    rmw_read(r);
}
