/* Wire and on-disk constants of the storage agent protocol, version 1.
 * docs/agent-protocol.md is the contract; every number here comes from it. */
#ifndef TSOS_PROTO_H
#define TSOS_PROTO_H

#include <stdint.h>
#include <string.h>

#define PROTO_VERSION 1
#define HELLO_MAGIC "TSOS"

#define FRAME_HDR 16

/* requests */
#define OP_HELLO 0x01
#define OP_PING 0x02
#define OP_INFO 0x03
#define OP_PUT_BEGIN 0x10
#define OP_PUT_DATA 0x11
#define OP_PUT_END 0x12
#define OP_PUT_ABORT 0x13
#define OP_GET 0x20
#define OP_DELETE 0x30
#define OP_STAT 0x31
#define OP_LINK 0x32
#define OP_LIST 0x40

/* responses */
#define OP_RESULT 0x80
#define OP_DATA 0x81

enum status {
    ST_OK = 0,
    ST_BAD_FRAME = 1,
    ST_UNKNOWN_OP = 2,
    ST_BAD_REQUEST = 3,
    ST_PROTOCOL = 4,
    ST_VERSION = 5,
    ST_NOT_FOUND = 6,
    ST_EXISTS = 7,
    ST_TOO_LARGE = 8,
    ST_CHECKSUM_MISMATCH = 9,
    ST_CORRUPT = 10,
    ST_NO_SPACE = 11,
    ST_IO_ERROR = 12,
    ST_RANGE = 13,
    ST_BUSY = 14,
};

const char *status_name(int st);

#define ID_LEN 16
#define ID_HEX_LEN 32

/* On-disk chunk format. */
#define BLOCK_SIZE 65536u
#define BLOCK_CRC 4u
#define FOOTER_LEN 32u
#define FOOTER_MAGIC "TSOSCHK1"

#define DEFAULT_MAX_FRAME 1048576u
#define DEFAULT_MAX_CHUNK 67108864ull
#define MAX_MAX_CHUNK 4294967296ull
/* Lower bound keeps every fixed-size response (HELLO, INFO, one LIST entry, error
 * messages) inside one frame; upper bound keeps per-connection buffers and the
 * writev iovec count (2 per block) sane. */
#define MIN_MAX_FRAME 4096u
#define MAX_MAX_FRAME (16u * 1048576u)

#define LIST_MAX 10000u
#define LIST_ENTRY 24u

/* The doc asks for at least 64 open PUT streams per connection. */
#define MAX_ACTIVE_STREAMS 64

static inline void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}
static inline uint16_t get_be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}
static inline uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t get_be64(const uint8_t *p)
{
    return ((uint64_t)get_be32(p) << 32) | get_be32(p + 4);
}

/* Size of the chunk file holding `len` data bytes: data, one CRC per (possibly
 * partial) block, footer. */
static inline uint64_t stored_size(uint64_t len)
{
    return len + BLOCK_CRC * ((len + BLOCK_SIZE - 1) / BLOCK_SIZE) + FOOTER_LEN;
}

#endif
