// CRC-32C with the SSE4.2 `crc32` instruction, on three lanes side by side for long inputs
// (below), against 1-2 GB/s for the software tables. Chosen at run time, so the binary still
// runs (on the tables) where the instruction is missing.
#include "ccrc32c.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>

int lacquer_crc32c_hardware(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
}

// The `crc32` instruction has a latency of three cycles and a throughput of one per cycle, so a
// single chain of them runs at a third of the speed the unit allows. Long inputs are cut into
// three equal lanes run side by side, and the lanes' registers are joined with the CRC's
// linearity: running a register `r` over `n` zero bytes multiplies it by x^(8n) modulo the
// polynomial, a linear map of `r`'s 32 bits, kept as four 256-entry tables per lane length.
// Then crc(A | B | C) = zeros(zeros(crc(A), |B|) ^ crc0(B), |C|) ^ crc0(C), where crc0 starts
// from a zero register.

enum { LONG_LANE = 8192, SHORT_LANE = 256 };

static uint32_t long_shift[4][256];
static uint32_t short_shift[4][256];
static pthread_once_t shift_tables_once = PTHREAD_ONCE_INIT;

/// `r` run over `n` zero bytes (n a multiple of 8), one instruction at a time.
__attribute__((target("sse4.2")))
static uint32_t zeros_slowly(uint32_t r, size_t n) {
    uint64_t c = r;
    for (size_t i = 0; i < n; i += 8) {
        c = _mm_crc32_u64(c, 0);
    }
    return (uint32_t)c;
}

__attribute__((target("sse4.2")))
static void build_shift_table(uint32_t table[4][256], size_t n) {
    uint32_t basis[32];
    for (int bit = 0; bit < 32; bit++) {
        basis[bit] = zeros_slowly((uint32_t)1 << bit, n);
    }
    for (int k = 0; k < 4; k++) {
        for (int byte = 0; byte < 256; byte++) {
            uint32_t value = 0;
            for (int bit = 0; bit < 8; bit++) {
                if ((byte >> bit) & 1) {
                    value ^= basis[8 * k + bit];
                }
            }
            table[k][byte] = value;
        }
    }
}

static void build_shift_tables(void) {
    build_shift_table(long_shift, LONG_LANE);
    build_shift_table(short_shift, SHORT_LANE);
}

static inline uint32_t zeros(uint32_t table[4][256], uint32_t r) {
    return table[0][r & 0xFF] ^ table[1][(r >> 8) & 0xFF] ^ table[2][(r >> 16) & 0xFF] ^ table[3][r >> 24];
}

static inline uint64_t load64(const unsigned char *p) {
    uint64_t word;
    memcpy(&word, p, sizeof word);
    return word;
}

/// `c` run over `3 * lane` bytes at `p` as three lanes side by side.
__attribute__((target("sse4.2")))
static inline uint64_t three_lanes(uint64_t c, const unsigned char *p, size_t lane, uint32_t table[4][256]) {
    uint64_t c1 = 0, c2 = 0;
    const unsigned char *end = p + lane;
    while (p < end) {
        c = _mm_crc32_u64(c, load64(p));
        c1 = _mm_crc32_u64(c1, load64(p + lane));
        c2 = _mm_crc32_u64(c2, load64(p + 2 * lane));
        p += 8;
    }
    return zeros(table, zeros(table, (uint32_t)c) ^ (uint32_t)c1) ^ (uint32_t)c2;
}

__attribute__((target("sse4.2")))
uint32_t lacquer_crc32c_update_hardware(uint32_t crc, const void *data, size_t length) {
    const unsigned char *p = (const unsigned char *)data;
    uint64_t c = (uint32_t)~crc;
    while (length > 0 && ((uintptr_t)p & 7) != 0) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        length--;
    }
    if (length >= 3 * SHORT_LANE) {
        pthread_once(&shift_tables_once, build_shift_tables);
        while (length >= 3 * LONG_LANE) {
            c = three_lanes(c, p, LONG_LANE, long_shift);
            p += 3 * LONG_LANE;
            length -= 3 * LONG_LANE;
        }
        while (length >= 3 * SHORT_LANE) {
            c = three_lanes(c, p, SHORT_LANE, short_shift);
            p += 3 * SHORT_LANE;
            length -= 3 * SHORT_LANE;
        }
    }
    while (length >= 8) {
        c = _mm_crc32_u64(c, load64(p));
        p += 8;
        length -= 8;
    }
    while (length > 0) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        length--;
    }
    return ~(uint32_t)c;
}

#else

int lacquer_crc32c_hardware(void) { return 0; }

uint32_t lacquer_crc32c_update_hardware(uint32_t crc, const void *data, size_t length) {
    (void)data;
    (void)length;
    return crc;
}

#endif
