/*
 * verifiers/expr.h - the expression tree shared by the LaTeX parser (latex.c)
 * and the comparer (mathcmp.c). Internal to verifiers/.
 */
#ifndef CELINE_VERIFIERS_EXPR_H
#define CELINE_VERIFIERS_EXPR_H

#include "internal.h"

typedef enum cel__nkind {
    CEL__N_NUM = 0, /* exact rational num/den (den > 0, reduced) or, when !exact, approx */
    CEL__N_CONST,   /* op: CEL__C_* */
    CEL__N_VAR,     /* str/len: the name ("x", "x_1", "alpha") */
    CEL__N_TEXT,    /* str/len: words (units, "no solution") */
    CEL__N_ADD,     /* kid[0..nkid) summed */
    CEL__N_MUL,     /* kid[0..nkid) multiplied */
    CEL__N_DIV,     /* kid[0] / kid[1] */
    CEL__N_NEG,     /* -kid[0] */
    CEL__N_POW,     /* kid[0] ^ kid[1] */
    CEL__N_FUNC,    /* op: CEL__F_*; kid[0] the argument (kid[1]: second argument / base) */
    CEL__N_PM,      /* kid[0] +- kid[1] (nkid 2) or +-kid[0] (nkid 1) */
    CEL__N_PCT,     /* kid[0] % */
    CEL__N_DEG,     /* kid[0] degrees */
    CEL__N_REL,     /* kid[0] op kid[1], op: CEL__R_* */
    CEL__N_LIST,    /* a bare comma list "1, 2" (compared as a set) */
    CEL__N_TUPLE,   /* lb/rb: '(' '[' then ')' ']': tuples and intervals */
    CEL__N_SET,     /* \{ ... \} */
    CEL__N_UNION,   /* kid[0] \cup kid[1] \cup ... */
    CEL__N_MATRIX,  /* rows x cols kids, row-major */
} cel__nkind;

enum { CEL__C_PI = 0, CEL__C_E, CEL__C_I, CEL__C_INF };
enum { CEL__R_EQ = 0, CEL__R_LT, CEL__R_LE, CEL__R_GT, CEL__R_GE, CEL__R_NE, CEL__R_APPROX, CEL__R_IN };
enum {
    CEL__F_SIN = 0, CEL__F_COS, CEL__F_TAN, CEL__F_COT, CEL__F_SEC, CEL__F_CSC,
    CEL__F_ASIN, CEL__F_ACOS, CEL__F_ATAN, CEL__F_ACOT,
    CEL__F_SINH, CEL__F_COSH, CEL__F_TANH,
    CEL__F_LN, CEL__F_LOG, CEL__F_LG, CEL__F_LOGB, CEL__F_EXP,
    CEL__F_SQRT, CEL__F_ROOT, CEL__F_ABS, CEL__F_FLOOR, CEL__F_CEIL,
    CEL__F_FACT, CEL__F_BINOM, CEL__F_GCD, CEL__F_LCM, CEL__F_MAX, CEL__F_MIN,
    CEL__F_COUNT
};

/* node flags */
enum {
    CEL__NF_INTLIT = 1,  /* an integer literal as written (for mixed numbers) */
    CEL__NF_FRACLIT = 2, /* \frac{int}{int} as written */
    CEL__NF_HAS_PM = 4,  /* the subtree contains a +- */
    CEL__NF_HAS_VAR = 8, /* the subtree contains a variable */
};

struct cel__node {
    uint8_t kind, op, flags;
    char lb, rb;            /* TUPLE brackets */
    uint16_t rows, cols;    /* MATRIX shape */
    uint32_t nkid;
    bool exact;             /* NUM */
    int64_t num, den;       /* NUM exact value */
    double approx;          /* NUM inexact value (or exact's double) */
    const char *str;        /* VAR / TEXT */
    size_t len;
    cel__node **kid;
};

extern const char *const cel__func_names[CEL__F_COUNT];

#endif
