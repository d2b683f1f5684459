/*
 * hello: prove the device is wired. Prints the peer id, where shared memory is
 * and how big (the device has no size register: the size is the board default
 * from the generated header), the magic the host left at offset 0 (proving the
 * mapping is the host's memory), then READY. Afterwards it reports each
 * notification, so a test can ring it without any mailbox protocol, and each
 * byte typed on the console, taken by the UART0 RX interrupt: two interrupt
 * sources on two NVIC inputs, live together.
 */
#include "ivshmem.h"
#include "mailbox.h"
#include "uart.h"

/* Anything for the main loop to report? Called with interrupts masked. */
static int news(uint32_t irqs, uint32_t spurious, uint32_t dropped)
{
    return ivshmem_irqs() != irqs || uart_rx_ready() || uart_rx_spurious() != spurious
        || uart_rx_dropped() != dropped;
}

/* Print "<label><count>" when a counter moved since the last report. */
static void report(const char *label, uint32_t now, uint32_t *last)
{
    if (now == *last)
        return;
    *last = now;
    uart_puts(label);
    uart_putu(now);
    uart_puts("\n");
}

int main(void)
{
    uart_init();
    uart_rx_init();
    ivshmem_init();

    uart_puts("hello: id=");
    uart_putu(ivshmem_id());
    uart_puts("\nshm base=");
    uart_puthex(IVSHMEM_SHMEM_ADDR);
    uart_puts(" size=");
    uart_putu(IVSHMEM_SHMEM_SIZE);
    uart_puts("\nshm magic=");
    uart_puthex(*(volatile uint32_t *)SHM(MBOX_MAGIC_OFF));
    uart_puts("\nREADY\n");

    uint32_t irqs = 0, spurious = 0, dropped = 0, rx = 0;
    for (;;) {
        /*
         * Check and sleep with interrupts masked: WFI still wakes on a pending
         * IRQ and the ISRs run at cpsie, so nothing landing between the check
         * and the WFI can be slept through.
         */
        __asm volatile("cpsid i" ::: "memory");
        if (!news(irqs, spurious, dropped))
            __asm volatile("wfi");
        __asm volatile("cpsie i" ::: "memory");

        report("hello: irqs=", ivshmem_irqs(), &irqs);
        for (uint8_t c; uart_rx_get(&c);) {
            uart_puts("hello: rx=");
            uart_putu(++rx);
            uart_puts(" byte=");
            uart_puthex8(c);
            uart_puts(" irqs=");
            uart_putu(ivshmem_irqs());
            uart_puts("\n");
        }
        report("hello: uart spurious=", uart_rx_spurious(), &spurious);
        report("hello: uart dropped=", uart_rx_dropped(), &dropped);
    }
}
