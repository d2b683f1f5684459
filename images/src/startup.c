/* Vector table and reset: what runs before main() on a bare Cortex-M3. */
#include <stdint.h>
#include "ivshmem.h"
#include "uart.h"

extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[], _estack[];
int main(void);

/* Anything unexpected (a fault, a stray IRQ) says so on the console and stops,
 * so a test sees "FAULT exc=N" instead of a silent timeout. */
static void unexpected(void)
{
    uint32_t ipsr;

    __asm volatile("mrs %0, ipsr" : "=r"(ipsr));
    uart_init();  /* may fault before main() set it up */
    uart_puts("\nFAULT exc=");  /* own line even mid-print */
    uart_putu(ipsr & 0x1ff);
    uart_puts("\n");
    for (;;)
        __asm volatile("wfi");
}

/* The fault vectors (HardFault, MemManage, BusFault, UsageFault): unexpected()
 * unless a program defines its own fault_handler (access.c records and skips). */
void fault_handler(void);
__attribute__((weak)) void fault_handler(void)
{
    unexpected();
}

/* Global so link.ld's ENTRY (for debuggers) can name it. */
void reset_handler(void);
void reset_handler(void)
{
    /* -nostdlib: no crt0, so .data/.bss are ours to set up (the stack is
     * already loaded from entry 0 by the core). */
    for (uint32_t *src = _sidata, *dst = _sdata; dst < _edata;)
        *dst++ = *src++;
    for (uint32_t *dst = _sbss; dst < _ebss;)
        *dst++ = 0;
    main();
    for (;;)
        __asm volatile("wfi");
}

#define NIRQ 32
/*
 * An NVIC input is one wire with no OR gate: a second source writing it
 * overrides the first's level, and a pulse while it is held high makes no
 * edge, so the pulse is lost. Each source needs its own input and vector.
 */
_Static_assert(IVSHMEM_IRQ_LINE != UART0_RX_IRQ,
               "ivshmem-flat must not share UART0 RX's NVIC input (board.py IRQ_LINE)");
/* Default every slot, then override the ones we handle: deliberate. */
#pragma GCC diagnostic ignored "-Woverride-init"
__attribute__((section(".vectors"), used))
static void (*const vectors[16 + NIRQ])(void) = {
    [0] = (void (*)(void))_estack,
    [1] = reset_handler,
    [2 ... 16 + NIRQ - 1] = unexpected,
    [3 ... 6] = fault_handler,
    [16 + IVSHMEM_IRQ_LINE] = ivshmem_isr,
    [16 + UART0_RX_IRQ] = uart_rx_isr,  /* enabled by uart_rx_init() (hello only) */
};
