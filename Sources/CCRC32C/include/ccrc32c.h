#ifndef LACQUER_CCRC32C_H
#define LACQUER_CCRC32C_H

#include <stddef.h>
#include <stdint.h>

/// 1 when this CPU has a CRC-32C instruction Lacquer uses (x86-64 SSE4.2), else 0.
int lacquer_crc32c_hardware(void);

/// Continues a CRC-32C (Castagnoli) with the CPU's instruction: the same result as the
/// software tables. Only call it when `lacquer_crc32c_hardware()` returned 1.
uint32_t lacquer_crc32c_update_hardware(uint32_t crc, const void *data, size_t length);

#endif
