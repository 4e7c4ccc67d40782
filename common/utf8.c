/* UTF-8 per RFC 3629 (no overlong forms, no surrogates, nothing above
 * U+10FFFF): the one validator, decoder, encoder and sanitiser that the
 * tokenizer, the verifiers, the generators and the server all use, so that
 * they agree on what valid text is. */
#include "celine/common.h"

size_t cel_utf8_lead_len(unsigned char c)
{
    return c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 1;
}

size_t cel_utf8_prefix_len(const unsigned char *s, size_t n)
{
    if (n == 0) return 0;
    unsigned char c = s[0];
    size_t need = cel_utf8_lead_len(c), k = 1;
    while (k < need && k < n) {
        /* the second byte's range is what rules out overlongs (E0, F0),
         * surrogates (ED) and code points past U+10FFFF (F4) */
        unsigned char lo = 0x80, hi = 0xBF;
        if (k == 1) {
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        }
        if (s[k] < lo || s[k] > hi) break;
        k++;
    }
    return k;
}

size_t cel_utf8_seq_len(const unsigned char *s, size_t n)
{
    if (n == 0) return 0;
    if (s[0] < 0x80) return 1;
    size_t need = cel_utf8_lead_len(s[0]);
    if (need == 1) return 0; /* a continuation byte or one that never starts a sequence */
    return cel_utf8_prefix_len(s, n) == need ? need : 0;
}

uint32_t cel_utf8_decode(const unsigned char *s, size_t len)
{
    switch (len) {
    case 1: return s[0];
    case 2: return (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
    case 3: return (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
    default:
        return (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 | (uint32_t)(s[2] & 0x3F) << 6 |
               (s[3] & 0x3F);
    }
}

size_t cel_utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

bool cel_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = cel_utf8_seq_len(u + i, n - i);
        if (!k) return false;
        i += k;
    }
    return true;
}

cel_status cel_utf8_sanitize(const char *s, size_t n, cel_buf *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        size_t k = cel_utf8_seq_len(u + i, n - i);
        if (k && u[i] != 0) {
            i += k;
            continue;
        }
        /* flush the valid run, then one U+FFFD for this byte */
        CEL_TRY(cel_buf_append(out, s + run, i - run));
        CEL_TRY(cel_buf_append(out, "\xEF\xBF\xBD", 3));
        i++;
        run = i;
    }
    return cel_buf_append(out, s + run, n - run);
}
