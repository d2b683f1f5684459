/*
 * access: the CPU path of the register catalogue. The host sends one request
 * line on the console, the Cortex-M3 performs exactly that load or store
 * (LDR/LDRB/LDRH/STR/STRB/STRH, at any address, aligned or not) and answers
 * with the value read, the fault taken if any, and its notification count.
 * qtest's readl/writel reach the device through address_space_rw(); a guest's
 * loads and stores go through TCG's MMIO path, which splits and checks them
 * differently: this is how the suite sees what a real guest sees.
 *
 *   request:  <seq> <op> <addr> <value>\n      hex; op r1 r2 r4 w1 w2 w4
 *   reply:    @<seq> v=0x%08x x=<exc> cfsr=0x%08x bfar=0x%08x irqs=<n>\n
 *
 * v is the value read (0 for a store or a faulted load), x the exception the
 * access raised (0 none, 3 HardFault, 4 MemManage, 5 BusFault, 6 UsageFault)
 * with CFSR and BFAR as the fault handler found them, irqs the device
 * notifications the ISR has counted so far. A line that does not parse gets
 * "@<seq> bad request". The fault handler skips the faulting instruction, so
 * a faulting access does not end the session.
 */
#include "ivshmem.h"
#include "uart.h"

#define SCB_SHCSR (*(volatile uint32_t *)0xE000ED24u)
#define SCB_CFSR  (*(volatile uint32_t *)0xE000ED28u)
#define SCB_HFSR  (*(volatile uint32_t *)0xE000ED2Cu)
#define SCB_BFAR  (*(volatile uint32_t *)0xE000ED38u)

#define SHCSR_FAULTS_ENA (7u << 16)  /* MemManage, BusFault, UsageFault: own vectors */
#define CFSR_IMPRECISERR (1u << 10)

static volatile uint32_t fault_exc, fault_cfsr, fault_bfar;

/*
 * Record the fault, clear its status (write 1 to clear) and resume after the
 * faulting instruction: the stacked PC is that instruction's, and a Thumb-2
 * instruction is 4 bytes when its first halfword starts 0b11101, 0b11110 or
 * 0b11111, else 2. An imprecise bus fault's stacked PC is a later instruction,
 * which must not be skipped (QEMU reports data aborts precisely).
 */
void fault_record(uint32_t *frame);
void fault_record(uint32_t *frame)
{
    uint32_t ipsr, cfsr = SCB_CFSR;

    __asm volatile("mrs %0, ipsr" : "=r"(ipsr));
    fault_exc = ipsr & 0x1ff;
    fault_cfsr = cfsr;
    fault_bfar = SCB_BFAR;
    SCB_CFSR = cfsr;
    SCB_HFSR = SCB_HFSR;
    if (!(cfsr & CFSR_IMPRECISERR)) {
        uint16_t first = *(volatile uint16_t *)frame[6];
        frame[6] += (first & 0xf800u) >= 0xe800u ? 4u : 2u;
    }
}

/* The exception frame is at MSP on entry (this firmware never uses PSP). */
__attribute__((naked)) void fault_handler(void)
{
    __asm volatile("mrs r0, msp\n\tb fault_record\n");
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Parse a hex number at *p up to a space or the end; 0 if there is none. */
static int parse_hex(const char **p, uint32_t *out)
{
    const char *s = *p;
    uint32_t v = 0;
    int n = 0, d;

    while (*s == ' ')
        s++;
    for (; (d = hexval(*s)) >= 0; s++, n++)
        v = v << 4 | (uint32_t)d;
    *p = s;
    *out = v;
    return n > 0 && n <= 8 && (*s == ' ' || *s == 0);
}

/* One access, exactly the instruction named: the asm keeps the compiler from
 * merging, widening or splitting it. */
static uint32_t do_access(char kind, char size, uint32_t addr, uint32_t value)
{
    uint32_t v = 0;

    if (kind == 'r' && size == '1')
        __asm volatile("ldrb %0, [%1]" : "+r"(v) : "r"(addr) : "memory");
    else if (kind == 'r' && size == '2')
        __asm volatile("ldrh %0, [%1]" : "+r"(v) : "r"(addr) : "memory");
    else if (kind == 'r')
        __asm volatile("ldr %0, [%1]" : "+r"(v) : "r"(addr) : "memory");
    else if (size == '1')
        __asm volatile("strb %0, [%1]" : : "r"(value), "r"(addr) : "memory");
    else if (size == '2')
        __asm volatile("strh %0, [%1]" : : "r"(value), "r"(addr) : "memory");
    else
        __asm volatile("str %0, [%1]" : : "r"(value), "r"(addr) : "memory");
    return v;
}

/* Next console line (without '\n') into buf; sleeps until bytes come. */
static void read_line(char *buf, uint32_t max)
{
    uint32_t n = 0;
    uint8_t c;

    for (;;) {
        __asm volatile("cpsid i" ::: "memory");
        if (!uart_rx_ready())
            __asm volatile("wfi");  /* a pending IRQ still wakes it; the ISR runs at cpsie */
        __asm volatile("cpsie i" ::: "memory");
        while (uart_rx_get(&c)) {
            if (c == '\n') {
                buf[n] = 0;
                return;
            }
            if (n < max - 1)
                buf[n++] = (char)c;
        }
    }
}

static void serve(const char *line)
{
    const char *p = line;
    uint32_t seq, addr, value;

    if (!parse_hex(&p, &seq)) {
        uart_puts("access: bad request\n");
        return;
    }
    while (*p == ' ')
        p++;
    char kind = p[0], size = p[0] ? p[1] : 0;
    int ok = (kind == 'r' || kind == 'w') && (size == '1' || size == '2' || size == '4')
        && p[2] == ' ';
    p += ok ? 3 : 0;
    if (!ok || !parse_hex(&p, &addr) || !parse_hex(&p, &value) || *p) {
        uart_puts("@");
        uart_puthex(seq);
        uart_puts(" bad request\n");
        return;
    }
    fault_exc = fault_cfsr = fault_bfar = 0;
    uint32_t v = do_access(kind, size, addr, value);
    uint32_t exc = fault_exc;
    uart_puts("@");
    uart_puthex(seq);
    uart_puts(" v=");
    uart_puthex(exc ? 0 : v);
    uart_puts(" x=");
    uart_putu(exc);
    uart_puts(" cfsr=");
    uart_puthex(fault_cfsr);
    uart_puts(" bfar=");
    uart_puthex(fault_bfar);
    uart_puts(" irqs=");
    uart_putu(ivshmem_irqs());
    uart_puts("\n");
}

int main(void)
{
    static char line[64];

    uart_init();
    uart_rx_init();
    ivshmem_init();
    SCB_SHCSR |= SHCSR_FAULTS_ENA;
    uart_puts("access: READY\n");
    for (;;) {
        read_line(line, sizeof(line));
        serve(line);
    }
}
