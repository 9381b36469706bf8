/* Chunk files on disk: layout, durability, accounting.
 *
 * Every function that can fail returns a protocol status (enum status) and, when
 * it is not ST_OK, writes a human-readable message into msg (the RESULT text). */
#ifndef TSOS_STORE_H
#define TSOS_STORE_H

#include "proto.h"

#include <stddef.h>
#include <stdint.h>

#define MSG_LEN 200

int store_init(const char *data_dir); /* 0, or -1 after logging why */
const uint8_t *store_agent_id(void);
void store_info(uint64_t *capacity, uint64_t *used, uint64_t *chunks, uint64_t *fs_free);

void id_to_hex(const uint8_t id[16], char out[33]);
int errno_status(int err);

/* Capacity accounting for PUTs in progress. */
int store_reserve(uint64_t bytes); /* ST_OK or ST_NO_SPACE */
void store_unreserve(uint64_t bytes);

/* ST_OK when the id is not stored, ST_EXISTS, or ST_IO_ERROR. */
int store_check_absent(const uint8_t id[16], char *msg);

/* A temporary file for a PUT; name must hold 96 bytes. */
int store_tmp_create(uint64_t request, char *name, int *fd, char *msg);
void store_tmp_discard(int fd, const char *name);
/* Makes the temporary file the chunk `id`, durably. Consumes fd and the
 * temporary file whatever the outcome; on ST_OK the reservation becomes used
 * space, otherwise it is released. */
int store_commit(int fd, const char *name, const uint8_t id[16], uint64_t file_size, uint64_t reservation,
                 char *msg);

struct chunk {
    int fd;
    uint64_t length;
    uint32_t crc;
    uint64_t mtime;
    uint64_t nblocks;
    int direct; /* fd has O_DIRECT set (store_read_blocks sets and clears it) */
    int cache;  /* read through the page cache, cold or not: a GET of a chunk being read again (store_note_get) */
};
int store_open_chunk(const uint8_t id[16], struct chunk *ch, char *msg);
void store_close_chunk(struct chunk *ch);
static inline uint32_t chunk_block_len(const struct chunk *ch, uint64_t b)
{
    uint64_t rest = ch->length - b * BLOCK_SIZE;
    return rest > BLOCK_SIZE ? BLOCK_SIZE : (uint32_t)rest;
}
/* Alignment and size of a buffer for store_read_blocks of nb blocks: the blocks with their CRCs, and room to
 * round a direct read out to IO_ALIGN on both sides. */
#define IO_ALIGN 4096u
static inline size_t store_iobuf_size(uint32_t nb)
{
    return (size_t)nb * (BLOCK_SIZE + BLOCK_CRC) + 2 * IO_ALIGN;
}
/* Reads blocks [b0, b0+nb) with their CRCs into buf (IO_ALIGN-aligned, store_iobuf_size(nb) bytes) and verifies
 * each; *data is where block b0 begins in buf (block j at *data + j*(64 KiB+4)); ST_CORRUPT on the first
 * mismatch. Blocks that are mostly not in the page cache are read with O_DIRECT, past it, unless direct reads
 * are off (--no-direct-reads) or the kernel cannot say (no cachestat) or the file system refuses. */
int store_read_blocks(struct chunk *ch, uint64_t b0, uint32_t nb, uint8_t *buf, const uint8_t **data, char *msg);
/* A GET of [off, end) of chunk `id`, opened as ch: what is not in the page cache is read past it, unless GETs
 * of the chunk lately (while it is among the last few thousand GET) have asked for as many bytes as it holds:
 * then it is being read again, through the cache, which keeps what is read often (not with
 * --no-read-cache-admission). The windows of one pass, as a node streams a large object in several GETs in any
 * order, are not a read again. Scrubbing (STAT verify) never notes, so it never fills the cache. */
void store_note_get(struct chunk *ch, const uint8_t id[16], uint64_t off, uint64_t end);

int store_delete(const uint8_t id[16], char *msg);

/* Makes the stored chunk `src` also stored as `dst` (a hard link: the same
 * file, no byte copied), durably; *length and *crc are the chunk's. ST_NOT_FOUND
 * without `src`, ST_EXISTS when `dst` is stored already. The chunk's bytes stay
 * until its last name is deleted, and `used` counts them once. */
int store_link(const uint8_t src[16], const uint8_t dst[16], uint64_t *length, uint32_t *crc, char *msg);

/* Writes up to max entries (id, be64 length) to out. */
int store_list(int has_cursor, const uint8_t cursor[16], uint32_t max, uint8_t *out, uint32_t *n, int *more,
               char *msg);

#endif
