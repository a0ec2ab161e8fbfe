/* peerkind.c - which peers speak kumofs-c (a GetStatus probe; see peerkind.h). */
#include "server/peerkind.h"

#include <string.h>

#include "logic/kwire.h"
#include "logic/log.h"
#include "logic/proto.h"
#include "logic/xmalloc.h"

/* Every server answers GetStatus at once; a peer that does
 * not answer within ~3 clock steps is treated as an original rather than delay the
 * replace copy by the default 10. */
#define PROBE_TIMEOUT_STEPS 3

typedef struct probe {
    server *srv;
    peerkind_cb cb;
    void *ud;
    size_t pending;
    kaddr *modern;               /* room for every probed node and self */
    size_t nmodern;
} probe;

typedef struct probe_call {
    probe *p;
    kaddr addr;
} probe_call;

static void probe_finish(probe *p)
{
    p->cb(p->srv, p->ud, p->modern, p->nmodern);
    free(p->modern);
    free(p);
}

static void probe_done(rpc_session *s, const rpc_result *r, void *ud)
{
    (void)s;
    probe_call *pc = ud;
    probe *p = pc->p;
    char buf[KADDR_STRLEN];
    /* GetStatus(extensions): a kumofs-c server answers its extension bits, an original
     * answers nil */
    uint32_t ext = 0;
    if (r->err == RPC_OK && kwire_get_u32(r->result, &ext) && (ext & STATUS_EXT_V1))
        p->modern[p->nmodern++] = pc->addr;
    else if (r->err == RPC_OK)
        log_info("peer %s speaks kumofs 0.4.13: no tombstones in its replace copy",
                 kaddr_format(&pc->addr, buf));
    free(pc);
    if (--p->pending == 0)
        probe_finish(p);
}

void peerkind_probe(server *srv, const hashspace *hs, peerkind_cb cb, void *ud)
{
    probe *p = xcalloc(1, sizeof(*p));
    p->srv = srv;
    p->cb = cb;
    p->ud = ud;
    p->modern = xcalloc(hs->nnodes + 1, sizeof(*p->modern));
    p->modern[p->nmodern++] = server_cfg(srv)->self;
    for (size_t i = 0; i < hs->nnodes; i++) {
        const hs_node *n = &hs->nodes[i];
        if (!n->active || kaddr_eq(&n->addr, &server_cfg(srv)->self))
            continue;
        probe_call *pc = xmalloc(sizeof(*pc));
        pc->p = p;
        pc->addr = n->addr;
        p->pending++;
        /* GetStatus (wire.md §9) of a code only kumofs-c knows: an original answers nil
         * (an unknown method would make it drop the connection) */
        rpc_session *s = rpc_node_session(server_rpc(srv), &n->addr, false);
        msgpack_packer *pk = rpc_call_begin(s, SRV_GET_STATUS, PROBE_TIMEOUT_STEPS,
                                            probe_done, pc);
        msgpack_pack_array(pk, 1);
        msgpack_pack_uint32(pk, STATUS_EXTENSIONS);
        rpc_call_end(s);
    }
    if (p->pending == 0)
        probe_finish(p);
}
