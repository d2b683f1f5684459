/*
 * pingpong: two guests bounce a counter. The host writes struct mbox_pingpong
 * (rounds = N >= 1, peer[] = both guests' ids, count = 0) and rings one of
 * them on vector 0. Whoever is rung increments count and rings the other,
 * until count reaches N: the guest that makes it N rings the other once more
 * and both print "pingpong: done count=N". Only the ball holder writes, so
 * the two guests never race on count. A host can replay by resetting count.
 */
#include "ivshmem.h"
#include "mailbox.h"
#include "uart.h"

static void done(uint32_t count)
{
    uart_puts("pingpong: done count=");
    uart_putu(count);
    uart_puts("\n");
}

int main(void)
{
    volatile struct mbox_pingpong *pp = SHM(MBOX_PP_OFF);
    uint32_t me;

    uart_init();
    ivshmem_init();
    me = ivshmem_id();
    uart_puts("pingpong: id=");
    uart_putu(me);
    uart_puts(" READY\n");

    for (uint32_t seen = 0;;) {
        seen = ivshmem_wait(seen);

        uint32_t other = pp->peer[0] == me ? pp->peer[1] : pp->peer[0];
        uint32_t count = pp->count, rounds = pp->rounds;

        if (pp->peer[0] != me && pp->peer[1] != me) {
            uart_puts("pingpong: not a player\n");
            continue;
        }
        if (count >= rounds) {  /* the other player finished the game */
            done(count);
            continue;
        }
        pp->last = me;
        ivshmem_barrier();
        pp->count = ++count;
        ivshmem_ring(other, MBOX_VECTOR);
        if (count == rounds)
            done(count);
    }
}
