/* ivshmem-flat driver: registers, doorbell and the notification counter. */
#ifndef IVSHMEM_H
#define IVSHMEM_H

#include <stdint.h>
#include "ivflat_board.h"   /* generated into the build dir from fixtures/ivflat/device/board.py */

#define SHM(off) ((volatile void *)(IVSHMEM_SHMEM_ADDR + (off)))

/* Make earlier shared-memory writes visible before a doorbell / flag write. */
static inline void ivshmem_barrier(void) { __asm volatile("dmb" ::: "memory"); }

void ivshmem_init(void);              /* enable the device's NVIC line */
uint32_t ivshmem_id(void);            /* IVPOSITION: our peer id */
void ivshmem_ring(uint32_t peer, uint32_t vector);
uint32_t ivshmem_irqs(void);          /* notifications taken so far */
uint32_t ivshmem_wait(uint32_t seen); /* sleep until the count differs from seen */
void ivshmem_isr(void);

#endif
