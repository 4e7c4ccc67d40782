/*
 * fuzz_jsonl.c - the corpus-job input side and the files and requests it
 * trusts least: the .jsonl / .jsonl.zst line reader (plain bytes, zstd
 * frames, truncated or corrupt frames, lines over the cap) with each line
 * turned into a document as a job would, the job state file (state.json,
 * read back on resume), and job specs (bodies of POST /v1/jobs).
 *
 * data[0] picks the mode: 0 raw reader input, 1 the rest zstd-compressed and
 * cut at a point data[1] chooses, 2 state.json, 3 a job spec.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "celine/job.h"
#include "generators/gen_internal.h"
#include "generators/job_internal.h"

static void read_all(const uint8_t *data, size_t len, size_t max_line)
{
    FILE *f = fmemopen((void *)data, len, "rb");
    if (!f) return;
    cel_jsonl_reader *r = NULL;
    cel_error e;
    if (cel_jsonl_open_stream(f, "fuzz", max_line, &r, &e) != CEL_OK) {
        fclose(f);
        return;
    }
    cel_doc_reader_opts o = {"id", "text", "quality", 0, false};
    for (int guard = 0; guard < 100000; guard++) {
        cel_jsonl_kind k;
        const char *s;
        size_t n;
        if (cel_jsonl_next(r, &k, &s, &n, &e) != CEL_OK || k == CEL_JSONL_EOF || k == CEL_JSONL_CORRUPT) break;
        if (k != CEL_JSONL_LINE) continue;
        if (n > max_line) abort(); /* the cap holds */
        cel__trim(&s, &n);
        if (!n) continue;
        json_t *cur = NULL;
        char idbuf[32], qbuf[64];
        cel_gen_doc d;
        if (cel__doc_parse_line(s, n, &o, "fuzz", cel_jsonl_line_number(r), &cur, idbuf, qbuf, &d, &e) == CEL_OK) {
            if (!d.id || !d.text || strlen(d.id) > 1024) abort();
            (void)cel__job_key_hash(d.id, strlen(d.id));
        }
        json_decref(cur);
    }
    (void)cel_jsonl_bytes_read(r);
    cel_jsonl_free(r);
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    unsigned mode = data[0] % 4;
    size_t max_line = 16 + (size_t)data[1] * 8;
    const uint8_t *p = data + 2;
    size_t n = size - 2;
    if (mode == 0) {
        read_all(p, n, max_line);
    } else if (mode == 1) {
        size_t bound = ZSTD_compressBound(n);
        uint8_t *z = malloc(bound ? bound : 1);
        if (!z) return 0;
        size_t zn = ZSTD_compress(z, bound, p, n, 1);
        if (!ZSTD_isError(zn)) {
            read_all(z, zn, max_line);                              /* whole */
            read_all(z, zn * data[1] / 256, max_line);              /* truncated */
            if (zn > 8) {
                z[zn / 2] ^= data[1];
                read_all(z, zn, max_line);                          /* corrupted */
            }
        }
        free(z);
    } else if (mode == 2) {
        cel__job_state s;
        cel_error e;
        if (cel__job_state_parse((const char *)p, n, "fuzz", &s, &e) == CEL_OK) {
            cel_buf b;
            cel_buf_init(&b);
            cel__job_state_to_json(&s, &b); /* what was read can be written back */
            cel_buf_free(&b);
            cel__job_state_free(&s);
        }
    } else {
        cel_job_spec *s = NULL;
        cel_error e;
        if (cel_job_spec_create(&s, &e) != CEL_OK) return 0;
        if (cel_job_spec_merge_json(s, (const char *)p, n, ~0u, "fuzz", &e) == CEL_OK) {
            cel_job_spec_validate(s, &e);
            cel_buf b;
            cel_buf_init(&b);
            cel_job_spec_json(s, &b);
            cel_buf_free(&b);
        }
        cel_job_spec_free(s);
    }
    return 0;
}
