/* Polled console on CMSDK APB UART0 (QEMU's -serial). */
#ifndef UART_H
#define UART_H

#include <stdint.h>

void uart_init(void);
void uart_puts(const char *s);
void uart_putu(uint32_t v);    /* decimal */
void uart_puthex(uint32_t v);  /* 0x%08x */

#endif
