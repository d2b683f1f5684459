/*
 * Mailbox layout at the start of the ivshmem shared memory, shared by every
 * program in images/ and by the host-side tests (README.md gives the Python
 * struct formats). All fields are little-endian u32 unless noted.
 *
 * Publication rule, both directions: write the payload first and the seq /
 * count word last, and ring the doorbell only after that, so whoever polls
 * the seq word never sees a half-written message.
 */
#ifndef MAILBOX_H
#define MAILBOX_H

#include <stdint.h>

#define MBOX_MAGIC_OFF  0x000u  /* u32 the host writes before boot; hello prints it */
#define MBOX_REQ_OFF    0x100u  /* struct mbox_req: host (or a peer) -> echo */
#define MBOX_REPLY_OFF  0x200u  /* struct mbox_reply: echo -> requester */
#define MBOX_PP_OFF     0x300u  /* struct mbox_pingpong: the two pingpong guests */

#define MBOX_DATA_MAX   224u    /* payload bytes per request/reply */

/* Notifications always use vector 0: see README ("Vectors"). */
#define MBOX_VECTOR     0u

#define MBOX_OK         0u
#define MBOX_EBADLEN    1u      /* request len > MBOX_DATA_MAX: reply has len 0 */

struct mbox_req {
    uint32_t seq;       /* chosen by the requester; copied into the reply */
    uint32_t sender;    /* peer id echo rings back (vector 0) when the reply is ready */
    uint32_t len;       /* bytes used in data[] */
    uint8_t data[MBOX_DATA_MAX];
};

struct mbox_reply {
    uint32_t seq;       /* written last: == request seq means the reply is complete */
    uint32_t responder; /* echo's own peer id */
    uint32_t len;
    uint32_t status;    /* MBOX_OK or MBOX_EBADLEN */
    uint32_t irqs;      /* notifications echo has taken so far, this one included */
    uint8_t data[MBOX_DATA_MAX]; /* request data, byte-reversed */
};

struct mbox_pingpong {
    uint32_t rounds;    /* N: the game ends when count reaches it (host writes, >= 1) */
    uint32_t peer[2];   /* ids of the two players (host writes) */
    uint32_t count;     /* incremented by whichever player holds the ball */
    uint32_t last;      /* id of the player that last incremented count */
};

_Static_assert(sizeof(struct mbox_req) <= MBOX_REPLY_OFF - MBOX_REQ_OFF, "req overlaps");
_Static_assert(sizeof(struct mbox_reply) <= MBOX_PP_OFF - MBOX_REPLY_OFF, "reply overlaps");

#endif
