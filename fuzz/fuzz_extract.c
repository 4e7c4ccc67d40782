/* libFuzzer target: answer extraction and the three graders on arbitrary
 * responses. Input: [task byte][response bytes]; the response is graded
 * against fixed references (with and without MCQ options) and must never
 * crash, hang or leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "celine/verify.h"

static cel_verifier *verifier(void)
{
    static cel_verifier *v;
    if (!v) {
        cel_verify_config c;
        cel_verify_config_default(&c);
        c.format = CEL_FORMAT_THINK | CEL_FORMAT_BOXED;
        c.max_response_bytes = 1 << 16;
        if (cel_verifier_create(&c, &v, NULL) != CEL_OK) abort();
    }
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    static const char *const refs[] = {"42", "\\frac{1}{2}", "C", "Paris", "(1,2)", "x^2-1"};
    static const char *const opts[] = {"Paris", "Rome", "Berlin", "Madrid"};
    uint8_t sel = data[0];
    char *resp = malloc(size);
    if (!resp) return 0;
    memcpy(resp, data + 1, size - 1);
    resp[size - 1] = '\0';
    cel_verify_item it;
    memset(&it, 0, sizeof it);
    it.response = resp;
    it.response_len = size - 1;
    it.reference = refs[sel % 6];
    it.task = (cel_task)((sel >> 3) & 3);
    if (sel & 0x80) {
        it.choices = opts;
        it.n_choices = 4;
        it.reference = "B";
    }
    cel_verify_result r;
    cel_error e;
    if (cel_verify_grade(verifier(), &it, &r, &e) == CEL_OK) {
        /* invariants every result keeps */
        if (r.correct && !r.has_extracted) abort();
        if (r.has_extracted && strlen(r.extracted) >= CEL_VERIFY_EXTRACT_MAX) abort();
        if (r.reward != 0.0 && r.reward != 1.0) abort();
    }
    free(resp);
    return 0;
}
