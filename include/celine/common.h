/*
 * celine/common.h - status codes, error messages and the small utilities every
 * module shares (growable buffers, file mapping, hashing, seeded RNG, clocks,
 * a thread pool). libc + pthreads only, so verifiers can link it alone.
 */
#ifndef CELINE_COMMON_H
#define CELINE_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CEL_VERSION_STRING "0.1.0"

/* Status codes: 0 is success, every failure is negative. */
typedef enum cel_status {
    CEL_OK = 0,
    CEL_ERR_INVALID = -1,     /* bad argument or malformed input */
    CEL_ERR_NOMEM = -2,       /* allocation failed */
    CEL_ERR_IO = -3,          /* open/read/write/mmap failed */
    CEL_ERR_FORMAT = -4,      /* file or data does not follow its format */
    CEL_ERR_UNSUPPORTED = -5, /* valid but not supported (dtype, arch, ...) */
    CEL_ERR_LIMIT = -6,       /* a configured size/work/time bound was hit */
    CEL_ERR_NOT_FOUND = -7,   /* missing key, tensor, file, id */
    CEL_ERR_BUSY = -8,        /* queue full; try again later */
    CEL_ERR_CANCELLED = -9,   /* cancelled by the caller */
    CEL_ERR_INTERNAL = -10,   /* a bug: an invariant did not hold */
    CEL_ERR_DEVICE = -11,     /* GPU / driver failure */
} cel_status;

/* An error as returned to callers: the code plus a message the caller owns
 * (a fixed buffer, so setting an error never allocates). */
#define CEL_ERROR_MSG_MAX 512
typedef struct cel_error {
    cel_status code;
    char msg[CEL_ERROR_MSG_MAX];
} cel_error;

/* Short stable name of a status ("invalid", "nomem", ...). */
const char *cel_status_name(cel_status s);

/* Sets err (when non-NULL) to code with a printf-style message; returns code
 * so callers can write `return cel_error_set(err, CEL_ERR_FORMAT, ...)`. */
cel_status cel_error_set(cel_error *err, cel_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
cel_status cel_error_vset(cel_error *err, cel_status code, const char *fmt, va_list ap);
/* Prepends "prefix: " to an error message already set (adds context). */
void cel_error_prefix(cel_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cel_error_clear(cel_error *err);

/* Propagate a failing status. */
#define CEL_TRY(expr)                                                                              \
    do {                                                                                           \
        cel_status cel__s = (expr);                                                                \
        if (cel__s != CEL_OK) return cel__s;                                                       \
    } while (0)

/* Logging goes through a hook the front end installs; library code never prints. */
typedef enum cel_log_level { CEL_LOG_DEBUG = 0, CEL_LOG_INFO, CEL_LOG_WARN, CEL_LOG_ERROR } cel_log_level;
typedef void (*cel_log_fn)(void *ud, cel_log_level level, const char *msg);
typedef struct cel_logger {
    cel_log_fn fn; /* NULL: discard */
    void *ud;
    cel_log_level min_level;
} cel_logger;
void cel_log(const cel_logger *lg, cel_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- growable byte buffer (always NUL-terminated when data != NULL) ---- */
typedef struct cel_buf {
    char *data;
    size_t len;
    size_t cap;
} cel_buf;
void cel_buf_init(cel_buf *b);
void cel_buf_free(cel_buf *b);
void cel_buf_reset(cel_buf *b); /* len = 0, keeps memory */
cel_status cel_buf_reserve(cel_buf *b, size_t extra);
cel_status cel_buf_append(cel_buf *b, const void *p, size_t n);
cel_status cel_buf_puts(cel_buf *b, const char *s);
cel_status cel_buf_putc(cel_buf *b, char c);
cel_status cel_buf_printf(cel_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hands the buffer's memory to the caller (free() it); the buffer is reset. */
char *cel_buf_steal(cel_buf *b);

/* ---- UTF-8 (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF) ---- */
/* Length (1..4) of the valid sequence starting at s, n bytes available; 0 when
 * s starts no valid sequence (a stray or truncated byte) or n is 0. */
size_t cel_utf8_seq_len(const unsigned char *s, size_t n);
/* The length a lead byte announces (2..4); 1 for ASCII and for bytes that
 * cannot start a sequence (continuations, C0, C1, F5..FF). */
size_t cel_utf8_lead_len(unsigned char c);
/* How many leading bytes of s (n available, at most the lead's length) form a
 * valid start of one sequence: at least 1 when n > 0. Lossy decoders skip this
 * many bytes per U+FFFD (one per maximal invalid subpart, as WHATWG/Rust do);
 * streaming decoders hold back a tail for which it equals the tail's length. */
size_t cel_utf8_prefix_len(const unsigned char *s, size_t n);
/* The code point of a sequence of len bytes that cel_utf8_seq_len accepted. */
uint32_t cel_utf8_decode(const unsigned char *s, size_t len);
/* Writes cp (<= U+10FFFF) as 1..4 bytes to out; returns how many. */
size_t cel_utf8_encode(uint32_t cp, char *out);
/* True when all n bytes are valid UTF-8 (NUL bytes count as valid). */
bool cel_utf8_valid(const char *s, size_t n);
/* Appends s to out with one U+FFFD for each byte that starts no valid
 * sequence and for each NUL byte (C strings downstream would cut there). */
cel_status cel_utf8_sanitize(const char *s, size_t n, cel_buf *out);

/* ---- files ---- */
/* Reads a whole file into a malloc'ed NUL-terminated buffer; refuses files larger
 * than max_bytes (0 = no cap). */
cel_status cel_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len, cel_error *err);
/* Read-only private mapping of a whole file. */
typedef struct cel_mmap {
    void *data;
    size_t size;
} cel_mmap;
cel_status cel_mmap_open(const char *path, cel_mmap *m, cel_error *err);
void cel_mmap_close(cel_mmap *m);
bool cel_path_is_dir(const char *path);
bool cel_path_exists(const char *path);

/* ---- hashing and deterministic randomness ---- */
uint64_t cel_hash64(const void *data, size_t n, uint64_t seed);
uint64_t cel_mix64(uint64_t x); /* splitmix64 finalizer */
/* Per-stream RNG (xoshiro256**): seeded explicitly, never shared. */
typedef struct cel_rng {
    uint64_t s[4];
} cel_rng;
void cel_rng_seed(cel_rng *r, uint64_t seed);
uint64_t cel_rng_next(cel_rng *r);
double cel_rng_uniform(cel_rng *r); /* [0, 1) */

/* ---- time ---- */
uint64_t cel_now_ns(void);   /* monotonic */
double cel_now_sec(void);    /* monotonic, seconds */
size_t cel_peak_rss_bytes(void);
size_t cel_current_rss_bytes(void);

/* ---- thread pool: parallel_for over [0, n) ---- */
typedef struct cel_pool cel_pool;
typedef void (*cel_pool_fn)(void *ctx, int64_t begin, int64_t end, int thread_index);
/* n_threads <= 0 picks the number of online CPUs. The calling thread takes part
 * in the work, so a pool of 1 creates no thread. */
cel_status cel_pool_create(int n_threads, cel_pool **out, cel_error *err);
void cel_pool_free(cel_pool *p);
int cel_pool_size(const cel_pool *p);
/* Splits [0, n) into contiguous ranges of at least `grain` items and runs fn on
 * them in parallel; returns when all are done. Not re-entrant on one pool. */
void cel_pool_run(cel_pool *p, int64_t n, int64_t grain, cel_pool_fn fn, void *ctx);
int cel_cpu_count(void);

#ifdef __cplusplus
}
#endif
#endif
