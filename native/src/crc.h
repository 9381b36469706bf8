#ifndef TSOS_CRC_H
#define TSOS_CRC_H

#include <stddef.h>
#include <stdint.h>

/* Standard CRC32C (Castagnoli, as iSCSI and Python's crc32c.crc32c()), chainable:
 * crc32c(crc32c(0, a), b) == crc32c(0, a || b). Start with 0. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* Returns 0 if the helper computes the standard check values, -1 otherwise. */
int crc32c_selftest(void);

#endif
