/* relay.c - Forward: a write relayed to its coordinator for a gateway that cannot reach it. */
#include "server/relay.h"

#include <stdlib.h>

#include "logic/kwire.h"
#include "logic/log.h"
#include "logic/proto.h"
#include "logic/xmalloc.h"

/* One relayed call on its way: whom to answer. */
typedef struct relay_call {
    server *srv;
    rpc_session *client;        /* referenced until the answer is sent */
    uint32_t msgid;
} relay_call;

/* The params of Set, Delete and Update are flat arrays of integers and raws; refusing
 * anything nested keeps the re-packing below from failing half-way (KWIRE_PACK_DEPTH_MAX). */
static bool flat_array(const msgpack_object *o)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return false;
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        int t = o->via.array.ptr[i].type;
        if (t == MSGPACK_OBJECT_ARRAY || t == MSGPACK_OBJECT_MAP)
            return false;
    }
    return true;
}

static void relayed_cb(rpc_session *s, const rpc_result *r, void *ud)
{
    relay_call *c = ud;
    if (r->err == RPC_TIMEOUT && !server_stopping(c->srv))
        /* the target did not answer in time: drop what is still on the way to it (TCP
         * RST), so that this write can never be applied after the gateway was told it
         * failed and the client wrote the key again through another path */
        rpc_session_abort(s);
    if (!server_stopping(c->srv)) {
        msgpack_packer *pk = rpc_reply_begin(c->client, c->msgid);
        if (r->err == RPC_TRANSPORT_LOST || r->err == RPC_NODE_LOST || r->err == RPC_TIMEOUT) {
            /* produced here, not by the target: the same codes the client would have
             * got from a direct call that failed this way */
            msgpack_pack_uint32(pk, (uint32_t)r->err);
            msgpack_pack_nil(pk);
        } else {
            kwire_pack_object(pk, r->error);     /* nil on success */
            kwire_pack_object(pk, r->result);
        }
        rpc_reply_end(c->client);
    }
    rpc_session_unref(c->client);
    free(c);
}

void relay_forward(server *srv, const rpc_request *req)
{
    kaddr target;
    uint32_t method, timeout_ms = 0;
    const msgpack_object *ao = kwire_array_at(req->params, 0);
    const msgpack_object *po = kwire_array_at(req->params, 2);
    const msgpack_object *to = kwire_array_at(req->params, 3);   /* optional */
    if (req->cluster || ao == NULL || !kwire_get_addr(ao, &target) || kaddr_is_null(&target)
        || !server_arg_u32(req, 1, &method) || po == NULL || !flat_array(po)
        || (to != NULL && !kwire_get_u32(to, &timeout_ms))) {
        rpc_reply_error(req->session, req->msgid, RPC_PROTOCOL_ERROR);
        return;
    }
    /* writes only, and never a Forward again: one hop, so a relay can never bounce a
     * call around (or back to a gateway's unreachable coordinator through a third) */
    if (method != SRV_SET && method != SRV_DELETE && method != SRV_UPDATE) {
        rpc_reply_error(req->session, req->msgid, RPC_PROTOCOL_ERROR);
        return;
    }
    if (hashspace_index(server_whs(srv), &target) < 0
        && hashspace_index(server_rhs(srv), &target) < 0) {
        char buf[KADDR_STRLEN];
        log_warn("Forward to %s refused: not a node of this cluster",
                 kaddr_format(&target, buf));
        rpc_reply_error(req->session, req->msgid, RPC_SERVER_ERROR);
        return;
    }
    double secs = timeout_ms > 0 ? timeout_ms / 1000.0 : RELAY_TIMEOUT_DEFAULT;
    if (secs > RELAY_TIMEOUT_MAX)
        secs = RELAY_TIMEOUT_MAX;
    relay_call *c = xmalloc(sizeof(*c));
    c->srv = srv;
    c->client = req->session;
    rpc_session_ref(c->client);
    c->msgid = req->msgid;
    /* a plain session: Set, Delete and Update are client methods (wire.md §8.2), which
     * a server refuses on a cluster connection */
    rpc_session *s = rpc_node_session(server_rpc(srv), &target, false);
    msgpack_packer *pk = rpc_call_begin_timed(s, method, secs, relayed_cb, c);
    kwire_pack_object(pk, po);
    rpc_call_end(s);
}
