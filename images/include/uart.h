/*
 * CMSDK APB UART0 (QEMU's -serial): polled console output, and optionally
 * interrupt-driven input (the RX interrupt, NVIC input UART0_RX_IRQ).
 */
#ifndef UART_H
#define UART_H

#include <stdint.h>

void uart_init(void);          /* TX only, polled */
void uart_puts(const char *s);
void uart_putu(uint32_t v);    /* decimal */
void uart_puthex(uint32_t v);  /* 0x%08x */
void uart_puthex8(uint8_t v);  /* 0x%02x */

/*
 * RX by interrupt: uart_rx_init() (after uart_init) enables the receiver, its
 * interrupt and the NVIC input. The ISR takes one byte per interrupt into a
 * small ring that uart_rx_get() drains (single producer, single consumer).
 */
void uart_rx_init(void);
int uart_rx_get(uint8_t *c);     /* 1 and the oldest byte, or 0 if none */
int uart_rx_ready(void);         /* a byte is waiting for uart_rx_get() */
uint32_t uart_rx_irqs(void);     /* RX interrupts taken (= bytes received) */
uint32_t uart_rx_dropped(void);  /* bytes received while the ring was full */
uint32_t uart_rx_spurious(void); /* entries to the UART0 RX vector without RX status */
void uart_rx_isr(void);

#endif
