/*
 * echo: one request, one reply. Each notification makes it read the request
 * at MBOX_REQ_OFF, write the byte-reversed data as the reply at
 * MBOX_REPLY_OFF (seq last) and ring the request's sender on vector 0.
 * Notifications that arrive while a request is handled may be coalesced, so
 * requesters send one request at a time and wait for reply.seq.
 */
#include "ivshmem.h"
#include "mailbox.h"
#include "uart.h"

int main(void)
{
    volatile struct mbox_req *req = SHM(MBOX_REQ_OFF);
    volatile struct mbox_reply *rep = SHM(MBOX_REPLY_OFF);
    uint32_t me;

    uart_init();
    ivshmem_init();
    me = ivshmem_id();
    uart_puts("echo: id=");
    uart_putu(me);
    uart_puts(" READY\n");

    for (uint32_t seen = 0;;) {
        seen = ivshmem_wait(seen);

        uint32_t seq = req->seq, sender = req->sender, len = req->len;
        uint32_t status = MBOX_OK;

        if (len > MBOX_DATA_MAX) {
            status = MBOX_EBADLEN;
            len = 0;
        }
        for (uint32_t i = 0; i < len; i++)
            rep->data[i] = req->data[len - 1 - i];
        rep->responder = me;
        rep->len = len;
        rep->status = status;
        rep->irqs = seen;
        ivshmem_barrier();
        rep->seq = seq;

        uart_puts("echo: seq=");
        uart_putu(seq);
        uart_puts(status == MBOX_OK ? "\n" : " bad len\n");
        /* Ringing ourselves would loop forever. */
        if (sender != me)
            ivshmem_ring(sender, MBOX_VECTOR);
    }
}
