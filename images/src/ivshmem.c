#include "ivshmem.h"
#include "nvic.h"

#define REG(off) (*(volatile uint32_t *)(IVSHMEM_IOMEM_ADDR + (off)))

_Static_assert(IVSHMEM_IRQ_LINE < 32, "nvic_enable() only handles inputs 0..31");

/*
 * The device has a single output line and pulses it once per notification
 * (coalesced if several arrive before QEMU services the eventfd), so all the
 * ISR can do is count; which peer/vector rang is the mailbox's business.
 * The NVIC latches the pulse as pending, so there is nothing to acknowledge.
 */
static volatile uint32_t irq_count;

void ivshmem_isr(void)
{
    irq_count++;
}

void ivshmem_init(void)
{
    nvic_enable(IVSHMEM_IRQ_LINE);
}

uint32_t ivshmem_id(void)
{
    return REG(IVSHMEM_REG_IVPOSITION);
}

void ivshmem_ring(uint32_t peer, uint32_t vector)
{
    ivshmem_barrier();
    REG(IVSHMEM_REG_DOORBELL) = (peer & 0xffffu) << 16 | (vector & 0xffffu);
}

uint32_t ivshmem_irqs(void)
{
    return irq_count;
}

uint32_t ivshmem_wait(uint32_t seen)
{
    for (;;) {
        /*
         * Check and sleep with interrupts masked: WFI still wakes on a pending
         * IRQ, and the ISR runs at cpsie, so a notification landing between
         * the check and the WFI cannot be slept through.
         */
        __asm volatile("cpsid i" ::: "memory");
        uint32_t n = irq_count;
        if (n != seen) {
            __asm volatile("cpsie i" ::: "memory");
            return n;
        }
        __asm volatile("wfi");
        __asm volatile("cpsie i" ::: "memory");
    }
}
