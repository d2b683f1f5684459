/* The few NVIC operations the firmware needs (external inputs 0..31 only). */
#ifndef NVIC_H
#define NVIC_H

#include <stdint.h>

#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100u)

/* Let NVIC input irq (0..31: the board has 32) interrupt the CPU. */
static inline void nvic_enable(uint32_t irq)
{
    NVIC_ISER0 = 1u << irq;
}

#endif
