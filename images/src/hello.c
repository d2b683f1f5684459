/*
 * hello: prove the device is wired. Prints the peer id, where shared memory is
 * and how big (the device has no size register: the size is the board default
 * from the generated header), the magic the host left at offset 0 (proving the
 * mapping is the host's memory), then READY. Afterwards it reports each
 * notification, so a test can ring it without any mailbox protocol.
 */
#include "ivshmem.h"
#include "mailbox.h"
#include "uart.h"

int main(void)
{
    uart_init();
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

    for (uint32_t seen = 0;;) {
        seen = ivshmem_wait(seen);
        uart_puts("hello: irqs=");
        uart_putu(seen);
        uart_puts("\n");
    }
}
