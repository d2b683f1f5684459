#include "uart.h"
#include "nvic.h"
#include "ivflat_board.h"

#define REG(off) (*(volatile uint32_t *)(UART0_ADDR + (off)))
#define DATA      REG(0x00)
#define STATE     REG(0x04)  /* bit 0: TX buffer full, bit 1: RX buffer full */
#define CTRL      REG(0x08)
#define INTSTATUS REG(0x0C)  /* read: pending; write 1 to clear */
#define BAUDDIV   REG(0x10)

#define CTRL_TX_EN    (1u << 0)
#define CTRL_RX_EN    (1u << 1)
#define CTRL_RX_INTEN (1u << 3)
#define INT_RX        (1u << 1)

_Static_assert(UART0_RX_IRQ < 32, "nvic_enable() only handles inputs 0..31");

void uart_init(void)
{
    /* 25 MHz / 115200. QEMU drops TX while CTRL.TX is off and flags bauddiv < 16. */
    BAUDDIV = 217;
    CTRL = CTRL_TX_EN;
}

static void uart_putc(char c)
{
    while (STATE & 1)
        ;
    DATA = (uint8_t)c;
}

void uart_puts(const char *s)
{
    while (*s)
        uart_putc(*s++);
}

void uart_putu(uint32_t v)
{
    char buf[11];
    int i = sizeof(buf);

    buf[--i] = 0;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    uart_puts(&buf[i]);
}

static void puthex(uint32_t v, int digits)
{
    uart_puts("0x");
    for (int shift = 4 * (digits - 1); shift >= 0; shift -= 4)
        uart_putc("0123456789abcdef"[(v >> shift) & 0xf]);
}

void uart_puthex(uint32_t v)
{
    puthex(v, 8);
}

void uart_puthex8(uint8_t v)
{
    puthex(v, 2);
}

/* ------------------------------------------------------------------ RX by interrupt */

#define RX_RING 64u  /* power of two: head/tail are free-running counters */

static volatile uint8_t rx_ring[RX_RING];
static volatile uint32_t rx_head;     /* bytes put in the ring: written by the ISR only */
static volatile uint32_t rx_tail;     /* bytes taken out: written by uart_rx_get() only */
static volatile uint32_t rx_irqs;
static volatile uint32_t rx_dropped;
static volatile uint32_t rx_spurious;

/*
 * One byte per interrupt (the UART has a one-byte buffer). The RX interrupt is
 * a level: INTSTATUS.RX stays set, and the NVIC input high, until written 1 to
 * clear; reading DATA only empties the buffer. So clear first, then read:
 * reading DATA lets QEMU deliver the next byte at once, and that byte must
 * raise the line again rather than have its status wiped by a later clear.
 */
void uart_rx_isr(void)
{
    if (!(INTSTATUS & INT_RX)) {
        rx_spurious++;  /* our NVIC input was raised by something else */
        return;
    }
    INTSTATUS = INT_RX;
    uint8_t c = (uint8_t)DATA;
    uint32_t head = rx_head;
    if (head - rx_tail < RX_RING) {
        rx_ring[head % RX_RING] = c;
        rx_head = head + 1;
    } else {
        rx_dropped++;
    }
    rx_irqs++;
}

void uart_rx_init(void)
{
    INTSTATUS = 0xf;
    CTRL |= CTRL_RX_EN | CTRL_RX_INTEN;
    /*
     * Empty the buffer. In QEMU this read is also what gets input flowing:
     * while RX was off the main loop stopped watching the serial backend, and
     * enabling RX in CTRL does not tell it (cmsdk-apb-uart calls
     * qemu_chr_fe_accept_input, which wakes the main loop, only on a DATA
     * read), so without it bytes typed now would sit in the chardev until
     * something else woke QEMU. A byte that slips in just before this read is
     * not lost: its RX status stays set, and the ISR reads it again from DATA.
     */
    (void)DATA;
    nvic_enable(UART0_RX_IRQ);
}

int uart_rx_ready(void)
{
    return rx_head != rx_tail;
}

int uart_rx_get(uint8_t *c)
{
    uint32_t tail = rx_tail;

    if (rx_head == tail)
        return 0;
    *c = rx_ring[tail % RX_RING];
    rx_tail = tail + 1;  /* volatile accesses stay in order: read the byte, then free it */
    return 1;
}

uint32_t uart_rx_irqs(void)
{
    return rx_irqs;
}

uint32_t uart_rx_dropped(void)
{
    return rx_dropped;
}

uint32_t uart_rx_spurious(void)
{
    return rx_spurious;
}
