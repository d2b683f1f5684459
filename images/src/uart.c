#include "uart.h"
#include "ivflat_board.h"

#define REG(off) (*(volatile uint32_t *)(UART0_ADDR + (off)))
#define DATA     REG(0x00)
#define STATE    REG(0x04)  /* bit 0: TX buffer full */
#define CTRL     REG(0x08)  /* bit 0: TX enable */
#define BAUDDIV  REG(0x10)

void uart_init(void)
{
    /* 25 MHz / 115200. QEMU drops TX while CTRL.TX is off and flags bauddiv < 16. */
    BAUDDIV = 217;
    CTRL = 1;
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

void uart_puthex(uint32_t v)
{
    uart_puts("0x");
    for (int shift = 28; shift >= 0; shift -= 4)
        uart_putc("0123456789abcdef"[(v >> shift) & 0xf]);
}
