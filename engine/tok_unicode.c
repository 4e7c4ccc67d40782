/*
 * tok_unicode.c - UTF-8 helpers and NFC normalization (Unicode 15.0 tables in
 * tok_nfc_data.c) for the tokenizers whose tokenizer.json asks for NFC (Qwen).
 *
 * NFC = canonical decomposition, canonical ordering of combining marks, then
 * canonical composition (UAX #15). Bytes that are not valid UTF-8 pass through
 * unchanged and block composition across them.
 */
#include <stdlib.h>
#include <string.h>

#include "tok_impl.h"

extern const uint32_t cel__nfc_ccc[];
extern const size_t cel__nfc_ccc_n;
extern const uint32_t cel__nfc_decomp[][3];
extern const size_t cel__nfc_decomp_n;
extern const uint32_t cel__nfc_pool[];
extern const uint32_t cel__nfc_comp[][3];
extern const size_t cel__nfc_comp_n;
extern const uint32_t cel__nfc_qc[][2];
extern const size_t cel__nfc_qc_n;

/* Hangul syllable arithmetic (Unicode ch. 3.12) */
enum { S_BASE = 0xAC00, L_BASE = 0x1100, V_BASE = 0x1161, T_BASE = 0x11A7, L_COUNT = 19, V_COUNT = 21, T_COUNT = 28 };
enum { N_COUNT = V_COUNT * T_COUNT, S_COUNT = L_COUNT * N_COUNT };

#define INVALID_BYTE 0x80000000u /* marks a raw byte that is not UTF-8 */

static int ccc_of(uint32_t cp)
{
    if (cp < 0x300 || (cp & INVALID_BYTE)) return 0;
    size_t lo = 0, hi = cel__nfc_ccc_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        uint32_t c = cel__nfc_ccc[mid] >> 8;
        if (c == cp) return (int)(cel__nfc_ccc[mid] & 0xFF);
        if (c < cp) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

static bool qc_not_yes(uint32_t cp)
{
    if (cp < 0x300) return false;
    size_t lo = 0, hi = cel__nfc_qc_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < cel__nfc_qc[mid][0]) hi = mid;
        else if (cp > cel__nfc_qc[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}

bool cel__nfc_quick(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    int last = 0;
    for (size_t i = 0; i < len;) {
        if (u[i] < 0x80) {
            i++;
            last = 0;
            continue;
        }
        size_t cl = cel_utf8_seq_len(u + i, len - i);
        if (!cl) {
            i++;
            last = 0;
            continue;
        }
        uint32_t cp = cel_utf8_decode(u + i, cl);
        i += cl;
        if (cp < 0x300) {
            last = 0;
            continue;
        }
        if (qc_not_yes(cp)) return false;
        int c = ccc_of(cp);
        if (c && c < last) return false;
        last = c;
    }
    return true;
}

static bool decomp_of(uint32_t cp, const uint32_t **d, size_t *n)
{
    if (cp < 0xC0) return false;
    size_t lo = 0, hi = cel__nfc_decomp_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        uint32_t c = cel__nfc_decomp[mid][0];
        if (c == cp) {
            *d = cel__nfc_pool + cel__nfc_decomp[mid][1];
            *n = cel__nfc_decomp[mid][2];
            return true;
        }
        if (c < cp) lo = mid + 1;
        else hi = mid;
    }
    return false;
}

static uint32_t compose_pair(uint32_t a, uint32_t b)
{
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE && b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    size_t lo = 0, hi = cel__nfc_comp_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *e = cel__nfc_comp[mid];
        if (e[0] == a && e[1] == b) return e[2];
        if (e[0] < a || (e[0] == a && e[1] < b)) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

cel_status cel__nfc_append(const char *s, size_t len, cel_buf *out)
{
    const unsigned char *u = (const unsigned char *)s;
    /* a decomposition is at most 18 code points (U+FDFA is compat-only; canonical ones are short),
     * so 4 per input byte is a safe bound */
    size_t cap = len * 4 + 4, n = 0;
    uint32_t *cp = malloc(cap * sizeof *cp);
    if (!cp) return CEL_ERR_NOMEM;
    for (size_t i = 0; i < len;) {
        size_t cl = cel_utf8_seq_len(u + i, len - i);
        if (!cl) {
            cp[n++] = INVALID_BYTE | u[i++];
            continue;
        }
        uint32_t c = cel_utf8_decode(u + i, cl);
        i += cl;
        const uint32_t *d;
        size_t dn;
        if (c >= S_BASE && c < S_BASE + S_COUNT) {
            uint32_t si = c - S_BASE;
            cp[n++] = L_BASE + si / N_COUNT;
            cp[n++] = V_BASE + (si % N_COUNT) / T_COUNT;
            if (si % T_COUNT) cp[n++] = T_BASE + si % T_COUNT;
        } else if (decomp_of(c, &d, &dn)) {
            for (size_t k = 0; k < dn && n < cap; k++) cp[n++] = d[k];
        } else
            cp[n++] = c;
    }
    /* canonical ordering: stable insertion sort of each run of non-starters */
    for (size_t i = 1; i < n; i++) {
        int c = ccc_of(cp[i]);
        if (!c) continue;
        uint32_t x = cp[i];
        size_t j = i;
        while (j > 0 && ccc_of(cp[j - 1]) > c) {
            cp[j] = cp[j - 1];
            j--;
        }
        cp[j] = x;
    }
    /* canonical composition */
    size_t w = 0;
    long starter = -1;
    int last_ccc = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = cp[i];
        int cc = ccc_of(c);
        if (starter >= 0 && !(c & INVALID_BYTE)) {
            bool blocked = w > (size_t)starter + 1 && (last_ccc == 0 || last_ccc >= cc);
            if (!blocked) {
                uint32_t comp = compose_pair(cp[starter], c);
                if (comp) {
                    cp[starter] = comp;
                    continue;
                }
            }
        }
        if (cc == 0) {
            starter = (c & INVALID_BYTE) ? -1 : (long)w;
            last_ccc = 0;
        } else
            last_ccc = cc;
        cp[w++] = c;
    }
    cel_status st = cel_buf_reserve(out, w * 4 + 1);
    for (size_t i = 0; !st && i < w; i++) {
        char b[4];
        if (cp[i] & INVALID_BYTE) {
            b[0] = (char)(cp[i] & 0xFF);
            st = cel_buf_append(out, b, 1);
        } else
            st = cel_buf_append(out, b, cel_utf8_encode(cp[i], b));
    }
    free(cp);
    return st;
}
