/*
 * mathcmp.c - deciding whether two parsed answers are mathematically equal,
 * and the math grader built on it.
 *
 * Scalars: exact rational arithmetic while every operation stays rational
 * (int64 with overflow checks); otherwise complex doubles with a relative +
 * absolute tolerance. Two integers compare exactly (1000001 != 1000000 even
 * though they are within 1e-6 of each other). Expressions with variables are
 * equal when they agree at several pseudo-random points (x^2-1 = (x-1)(x+1)).
 * Containers: bare lists and \{sets\} ignore order; tuples and intervals keep
 * order and bracket kinds (open vs closed matters); matrices compare
 * element-wise. Around that: "x = 3" equals "3", units and \text{} words
 * beside a number drop, 50% equals 0.5 (and 50), 30^\circ equals 30 (and
 * \pi/6), and a +- expands into the set of its values.
 */
#include <complex.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "expr.h"

typedef struct val {
    bool ok, exact;
    int64_t p, q;
    double complex z;
} val;

#define MAXV 16
typedef struct env {
    cel__ctx *c;
    const char *name[MAXV];
    size_t len[MAXV];
    double complex v[MAXV];
    int nv;
    uint32_t pm_bits;
    int pm_index;
    int trig;    /* > 0 while evaluating a trig function's argument */
    bool deg_rad; /* degrees count as radians everywhere (a comparison variant) */
} env;

static val bad(void)
{
    val v;
    memset(&v, 0, sizeof v);
    v.z = NAN;
    return v;
}

static val vnum(double complex z)
{
    val v = bad();
    v.ok = !isnan(creal(z)) && !isnan(cimag(z));
    v.z = z;
    return v;
}

static val vrat(int64_t p, int64_t q)
{
    if (q == 0) return bad();
    if (q < 0) {
        if (p == INT64_MIN || q == INT64_MIN) return vnum((double)p / (double)q);
        p = -p, q = -q;
    }
    int64_t g = cel__gcd64(p, q);
    if (g > 1) p /= g, q /= g;
    val v = bad();
    v.ok = v.exact = true;
    v.p = p, v.q = q;
    v.z = (double)p / (double)q;
    return v;
}

static val vadd(val a, val b)
{
    if (!a.ok || !b.ok) return bad();
    if (a.exact && b.exact) {
        int64_t x, y, d, s;
        if (!__builtin_mul_overflow(a.p, b.q, &x) && !__builtin_mul_overflow(b.p, a.q, &y) &&
            !__builtin_mul_overflow(a.q, b.q, &d) && !__builtin_add_overflow(x, y, &s))
            return vrat(s, d);
    }
    return vnum(a.z + b.z);
}

static val vneg(val a)
{
    if (!a.ok) return a;
    if (a.exact && a.p != INT64_MIN) return vrat(-a.p, a.q);
    return vnum(-a.z);
}

static val vmul(val a, val b)
{
    if (!a.ok || !b.ok) return bad();
    if (a.exact && b.exact) {
        int64_t x, d;
        if (!__builtin_mul_overflow(a.p, b.p, &x) && !__builtin_mul_overflow(a.q, b.q, &d)) return vrat(x, d);
    }
    /* inf * 0 etc. become NaN: not ok */
    return vnum(a.z * b.z);
}

static val vdiv(val a, val b)
{
    if (!a.ok || !b.ok) return bad();
    if (b.exact && b.p == 0) return bad();
    if (a.exact && b.exact) {
        int64_t x, d;
        if (!__builtin_mul_overflow(a.p, b.q, &x) && !__builtin_mul_overflow(a.q, b.p, &d)) return vrat(x, d);
    }
    if (cabs(b.z) == 0) return bad();
    return vnum(a.z / b.z);
}

static bool is_real(val a) { return fabs(cimag(a.z)) <= 1e-300; }

/* Exact integer k-th root of a non-negative x, when there is one. */
static bool iroot(int64_t x, int64_t k, int64_t *out)
{
    if (x < 0 || k < 1 || k > 64) return false;
    if (x < 2) return *out = x, true;
    double r = pow((double)x, 1.0 / (double)k);
    for (int64_t c = (int64_t)r - 1; c <= (int64_t)r + 1; c++) {
        if (c < 0) continue;
        int64_t acc = 1;
        bool ovf = false;
        for (int64_t i = 0; i < k && !ovf; i++) ovf = __builtin_mul_overflow(acc, c, &acc);
        if (!ovf && acc == x) return *out = c, true;
    }
    return false;
}

static val vpow(val b, val e)
{
    if (!b.ok || !e.ok) return bad();
    if (b.exact && e.exact && e.q == 1 && e.p >= -64 && e.p <= 64) {
        int64_t n = e.p < 0 ? -e.p : e.p;
        int64_t P = 1, Q = 1;
        bool ovf = false;
        for (int64_t i = 0; i < n && !ovf; i++)
            ovf = __builtin_mul_overflow(P, b.p, &P) || __builtin_mul_overflow(Q, b.q, &Q);
        if (!ovf) {
            if (e.p >= 0) return vrat(P, Q);
            if (P != 0) return vrat(Q, P);
            return bad();
        }
    }
    if (b.exact && e.exact && e.q > 1 && e.q <= 12 && e.p > -64 && e.p < 64) {
        /* rational exponent: exact when the root is */
        int64_t ap = b.p < 0 ? -b.p : b.p, rp, rq;
        if ((b.p >= 0 || (e.q & 1)) && iroot(ap, e.q, &rp) && iroot(b.q, e.q, &rq)) {
            val r = vrat(b.p < 0 ? -rp : rp, rq);
            val ee = vrat(e.p, 1);
            return vpow(r, ee);
        }
    }
    if (is_real(b) && is_real(e) && creal(b.z) < 0 && e.exact && (e.q & 1)) {
        /* odd root of a negative real: the real root, as people mean it */
        double m = pow(-creal(b.z), creal(e.z));
        return vnum((e.p & 1) ? -m : m);
    }
    if (is_real(b) && is_real(e) && creal(b.z) >= 0) return vnum(pow(creal(b.z), creal(e.z)));
    if (cabs(b.z) == 0) return creal(e.z) > 0 ? vrat(0, 1) : bad();
    return vnum(cpow(b.z, e.z));
}

static double complex realish(double complex z) { return fabs(cimag(z)) < 1e-15 ? creal(z) : z; }

static val eval(env *E, const cel__node *x);

static val eval_func(env *E, const cel__node *x)
{
    int f = x->op;
    bool trig = f <= CEL__F_CSC;
    if (trig) E->trig++;
    val a = x->nkid > 0 ? eval(E, x->kid[0]) : bad();
    if (trig) E->trig--;
    val b = x->nkid > 1 ? eval(E, x->kid[1]) : bad();
    for (uint32_t i = 2; i < x->nkid; i++) (void)eval(E, x->kid[i]); /* keep the +- numbering in step */
    if (!a.ok) return bad();
    double complex z = a.z;
    double re = creal(z);
    bool real = is_real(a);
    switch (f) {
    case CEL__F_SIN: return vnum(real ? sin(re) : csin(z));
    case CEL__F_COS: return vnum(real ? cos(re) : ccos(z));
    case CEL__F_TAN: return vnum(real ? tan(re) : ctan(z));
    case CEL__F_COT: return vnum(1.0 / (real ? tan(re) : ctan(z)));
    case CEL__F_SEC: return vnum(1.0 / (real ? cos(re) : ccos(z)));
    case CEL__F_CSC: return vnum(1.0 / (real ? sin(re) : csin(z)));
    case CEL__F_ASIN: return vnum(real && fabs(re) <= 1 ? asin(re) : casin(z));
    case CEL__F_ACOS: return vnum(real && fabs(re) <= 1 ? acos(re) : cacos(z));
    case CEL__F_ATAN: return vnum(real ? atan(re) : catan(z));
    case CEL__F_ACOT: return vnum(real ? atan(1.0 / re) : catan(1.0 / z));
    case CEL__F_SINH: return vnum(csinh(z));
    case CEL__F_COSH: return vnum(ccosh(z));
    case CEL__F_TANH: return vnum(ctanh(z));
    case CEL__F_LN:
    case CEL__F_LOG:
        if (a.exact && a.p == 1 && a.q == 1) return vrat(0, 1);
        return vnum(real && re > 0 ? log(re) : clog(z));
    case CEL__F_LG: return vnum(real && re > 0 ? log10(re) : clog(z) / log(10.0));
    case CEL__F_LOGB: {
        if (!b.ok) return bad();
        /* log_b(a): exact when a is an integer power of b */
        if (a.exact && b.exact && b.q == 1 && a.q == 1 && b.p > 1 && a.p > 0) {
            int64_t acc = 1;
            for (int k = 0; k <= 62; k++) {
                if (acc == a.p) return vrat(k, 1);
                if (__builtin_mul_overflow(acc, b.p, &acc)) break;
            }
        }
        double complex d = clog(b.z);
        if (cabs(d) == 0) return bad();
        return vnum(realish(clog(z) / d));
    }
    case CEL__F_EXP: return vnum(real ? exp(re) : cexp(z));
    case CEL__F_SQRT: {
        if (a.exact && a.p >= 0) {
            int64_t rp, rq;
            if (iroot(a.p, 2, &rp) && iroot(a.q, 2, &rq)) return vrat(rp, rq);
        }
        return vnum(real && re >= 0 ? sqrt(re) : csqrt(z));
    }
    case CEL__F_ROOT: {
        if (!b.ok) return bad();
        return vpow(a, vdiv(vrat(1, 1), b));
    }
    case CEL__F_ABS:
        if (a.exact) return vrat(a.p < 0 ? -a.p : a.p, a.q);
        return vnum(cabs(z));
    case CEL__F_FLOOR:
        if (a.exact) return vrat(a.p >= 0 ? a.p / a.q : -((-a.p + a.q - 1) / a.q), 1);
        return vnum(floor(re));
    case CEL__F_CEIL:
        if (a.exact) return vrat(a.p >= 0 ? (a.p + a.q - 1) / a.q : -((-a.p) / a.q), 1);
        return vnum(ceil(re));
    case CEL__F_FACT:
        if (a.exact && a.q == 1 && a.p >= 0 && a.p <= 20) {
            int64_t r = 1;
            for (int64_t i = 2; i <= a.p; i++) r *= i;
            return vrat(r, 1);
        }
        if (!real || re < 0 || re > 170) return bad();
        return vnum(tgamma(re + 1.0));
    case CEL__F_BINOM: {
        if (!b.ok) return bad();
        if (a.exact && b.exact && a.q == 1 && b.q == 1 && a.p >= 0 && b.p >= 0 && b.p <= a.p && a.p <= 62) {
            int64_t r = 1;
            for (int64_t i = 1; i <= b.p; i++) r = r * (a.p - b.p + i) / i;
            return vrat(r, 1);
        }
        if (!real || !is_real(b)) return bad();
        double n = re, k = creal(b.z);
        return vnum(tgamma(n + 1) / (tgamma(k + 1) * tgamma(n - k + 1)));
    }
    case CEL__F_GCD:
    case CEL__F_LCM: {
        if (!a.exact || a.q != 1) return bad();
        /* two integer arguments (more are rare in answers: not supported) */
        if (x->nkid != 2 || !b.ok || !b.exact || b.q != 1) return bad();
        int64_t g = a.p < 0 ? -a.p : a.p, w = b.p < 0 ? -b.p : b.p;
        if (f == CEL__F_GCD) return vrat(cel__gcd64(g, w), 1);
        int64_t d = cel__gcd64(g, w);
        if (d == 0) return vrat(0, 1);
        if (__builtin_mul_overflow(g / d, w, &g)) return bad();
        return vrat(g, 1);
    }
    case CEL__F_MAX:
    case CEL__F_MIN: {
        if (!b.ok || !real || !is_real(b)) return bad();
        bool first = f == CEL__F_MAX ? creal(a.z) >= creal(b.z) : creal(a.z) <= creal(b.z);
        return first ? a : b;
    }
    default: return bad();
    }
}

static val eval(env *E, const cel__node *x)
{
    if (!cel__charge(E->c, 1)) return bad();
    switch (x->kind) {
    case CEL__N_NUM:
        if (x->exact) return vrat(x->num, x->den);
        return vnum(x->approx);
    case CEL__N_CONST:
        switch (x->op) {
        case CEL__C_PI: return vnum(M_PI);
        case CEL__C_E: return vnum(M_E);
        case CEL__C_I: return vnum(I);
        default: return vnum(INFINITY);
        }
    case CEL__N_VAR:
        for (int i = 0; i < E->nv; i++)
            if (E->len[i] == x->len && memcmp(E->name[i], x->str, x->len) == 0) return vnum(E->v[i]);
        return bad();
    case CEL__N_ADD: {
        val s = eval(E, x->kid[0]);
        for (uint32_t i = 1; i < x->nkid; i++) s = vadd(s, eval(E, x->kid[i]));
        return s;
    }
    case CEL__N_MUL: {
        val s = eval(E, x->kid[0]);
        for (uint32_t i = 1; i < x->nkid; i++) s = vmul(s, eval(E, x->kid[i]));
        return s;
    }
    case CEL__N_DIV: {
        val a = eval(E, x->kid[0]);
        return vdiv(a, eval(E, x->kid[1]));
    }
    case CEL__N_NEG: return vneg(eval(E, x->kid[0]));
    case CEL__N_POW: {
        val a = eval(E, x->kid[0]);
        return vpow(a, eval(E, x->kid[1]));
    }
    case CEL__N_FUNC: return eval_func(E, x);
    case CEL__N_PM: {
        bool minus = (E->pm_bits >> (E->pm_index++ & 31)) & 1;
        if (x->nkid == 1) {
            val a = eval(E, x->kid[0]);
            return minus ? vneg(a) : a;
        }
        val a = eval(E, x->kid[0]);
        val b = eval(E, x->kid[1]);
        return vadd(a, minus ? vneg(b) : b);
    }
    case CEL__N_PCT: return vdiv(eval(E, x->kid[0]), vrat(100, 1));
    case CEL__N_DEG: {
        val a = eval(E, x->kid[0]);
        if (E->trig > 0 || E->deg_rad) return vmul(a, vnum(M_PI / 180.0));
        return a;
    }
    default: return bad();
    }
}

/* ------------------------------------------------------------ comparison */

static bool vclose(const cel_verify_config *cfg, val a, val b)
{
    if (!a.ok || !b.ok) return false;
    if (a.exact && b.exact) {
        if (a.p == b.p && a.q == b.q) return true;
        if (a.q == 1 && b.q == 1) return false; /* integers: exactly */
    }
    double complex za = a.z, zb = b.z;
    bool ia = isinf(creal(za)) || isinf(cimag(za)), ib = isinf(creal(zb)) || isinf(cimag(zb));
    if (ia || ib) return ia && ib && creal(za) == creal(zb) && fabs(cimag(za) - cimag(zb)) < 1e-12;
    double d = cabs(za - zb), s = fmax(cabs(za), cabs(zb));
    return d <= cfg->abs_tol + cfg->rel_tol * s;
}

static void collect_vars(env *E, const cel__node *x, int depth)
{
    if (!x || depth > 300) return;
    if (x->kind == CEL__N_VAR) {
        for (int i = 0; i < E->nv; i++)
            if (E->len[i] == x->len && memcmp(E->name[i], x->str, x->len) == 0) return;
        if (E->nv < MAXV) {
            E->name[E->nv] = x->str, E->len[E->nv] = x->len;
            E->nv++;
        }
        return;
    }
    for (uint32_t i = 0; i < x->nkid; i++) collect_vars(E, x->kid[i], depth + 1);
}

static int count_pm(const cel__node *x, int depth)
{
    if (!x || !(x->flags & CEL__NF_HAS_PM) || depth > 300) return 0;
    int n = x->kind == CEL__N_PM;
    for (uint32_t i = 0; i < x->nkid; i++) n += count_pm(x->kid[i], depth + 1);
    return n;
}

static val eval_with(cel__ctx *c, const cel__node *x, uint32_t bits, const env *vars, bool deg_rad)
{
    env E;
    if (vars) E = *vars;
    else memset(&E, 0, sizeof E);
    E.c = c, E.pm_bits = bits, E.pm_index = 0, E.trig = 0, E.deg_rad = deg_rad;
    return eval(&E, x);
}

/* Scalar equality for fixed +- choices: exact/numeric without variables,
 * else agreement at pseudo-random points (deterministic from the seed). */
static bool scalar_eq_bits(cel__ctx *c, const cel__node *a, uint32_t ba, const cel__node *b, uint32_t bb, bool da,
                           bool db)
{
    const cel_verify_config *cfg = c->cfg;
    env V;
    memset(&V, 0, sizeof V);
    collect_vars(&V, a, 0);
    collect_vars(&V, b, 0);
    if (V.nv == 0) return vclose(cfg, eval_with(c, a, ba, NULL, da), eval_with(c, b, bb, NULL, db));
    if (V.nv >= MAXV) return false;
    int valid = 0;
    cel_verify_config loose = *cfg;
    if (loose.rel_tol < 1e-9) loose.rel_tol = 1e-9;
    for (int t = 0; t < 8 && valid < 5; t++) {
        for (int i = 0; i < V.nv; i++) {
            cel_rng r;
            cel_rng_seed(&r, cel_mix64(cfg->seed ^ cel_hash64(V.name[i], V.len[i], (uint64_t)t + 1)));
            V.v[i] = 0.35 + 2.0 * cel_rng_uniform(&r);
        }
        val x = eval_with(c, a, ba, &V, da), y = eval_with(c, b, bb, &V, db);
        if (c->fail) return false;
        if (!x.ok && !y.ok) continue;
        bool fx = x.ok && isfinite(creal(x.z)) && isfinite(cimag(x.z));
        bool fy = y.ok && isfinite(creal(y.z)) && isfinite(cimag(y.z));
        if (!fx && !fy) continue;
        if (fx != fy) return false;
        x.exact = y.exact = false;
        if (!vclose(&loose, x, y)) return false;
        valid++;
    }
    return valid >= 3;
}

/* With the percent and degree readings: 50% = 0.5 = 50, 30^\circ = 30 = \pi/6. */
static bool scalar_eq(cel__ctx *c, const cel__node *a, uint32_t ba, const cel__node *b, uint32_t bb)
{
    if (scalar_eq_bits(c, a, ba, b, bb, false, false)) return true;
    if (c->fail) return false;
    if (a->kind == CEL__N_PCT && b->kind != CEL__N_PCT && scalar_eq_bits(c, a->kid[0], ba, b, bb, false, false))
        return true;
    if (b->kind == CEL__N_PCT && a->kind != CEL__N_PCT && scalar_eq_bits(c, a, ba, b->kid[0], bb, false, false))
        return true;
    if (a->kind == CEL__N_DEG && b->kind != CEL__N_DEG && scalar_eq_bits(c, a, ba, b, bb, true, false)) return true;
    if (b->kind == CEL__N_DEG && a->kind != CEL__N_DEG && scalar_eq_bits(c, a, ba, b, bb, false, true)) return true;
    return false;
}

static cel__node *mknode(cel__ctx *c, int kind, uint32_t nkid)
{
    if (!cel__charge(c, 1)) return NULL;
    cel__node *n = cel__alloc(c, sizeof *n + nkid * sizeof(cel__node *));
    if (!n) return NULL;
    n->kind = (uint8_t)kind;
    n->nkid = nkid;
    n->kid = nkid ? (cel__node **)(n + 1) : NULL;
    return n;
}

static bool is_texty(const cel__node *x)
{
    if (x->kind == CEL__N_TEXT) return true;
    if (x->kind == CEL__N_POW) return x->kid[0]->kind == CEL__N_TEXT; /* \text{cm}^2 */
    if (x->kind == CEL__N_DIV) return is_texty(x->kid[0]) && is_texty(x->kid[1]);
    if (x->kind == CEL__N_MUL) {
        for (uint32_t i = 0; i < x->nkid; i++)
            if (!is_texty(x->kid[i])) return false;
        return true;
    }
    return false;
}

/* Factors of a product chain (MUL nodes nest left). */
static void factors(const cel__node *x, const cel__node **out, int *n, int cap)
{
    if (x->kind == CEL__N_MUL) {
        for (uint32_t i = 0; i < x->nkid; i++) factors(x->kid[i], out, n, cap);
        return;
    }
    if (*n < cap) out[(*n)++] = x;
    else out[cap - 1] = NULL; /* too many: mark */
}

/* Drops unit words beside a number: MUL(5, "cm") -> 5; "5 \text{ cm}^2" -> 5. */
static const cel__node *drop_units(cel__ctx *c, const cel__node *x)
{
    if (x->kind == CEL__N_DIV && is_texty(x->kid[1]) && !is_texty(x->kid[0])) return drop_units(c, x->kid[0]);
    if (x->kind != CEL__N_MUL) return x;
    const cel__node *f[32];
    int n = 0;
    factors(x, f, &n, 32);
    if (n == 32 && !f[31]) return x;
    int keep = 0;
    for (int i = 0; i < n; i++)
        if (!is_texty(f[i])) keep++;
    if (keep == n || keep == 0) return x;
    cel__node *m = mknode(c, CEL__N_MUL, (uint32_t)keep);
    if (!m) return x;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!is_texty(f[i])) m->kid[k++] = (cel__node *)f[i], m->flags |= f[i]->flags & (CEL__NF_HAS_PM | CEL__NF_HAS_VAR);
    return keep == 1 ? m->kid[0] : m;
}

/* A left side that names the answer: x, f(x), x_1, \text{Area}. */
static bool naming_lhs(const cel__node *x)
{
    if (x->kind == CEL__N_VAR || x->kind == CEL__N_TEXT) return true;
    if (x->kind == CEL__N_MUL) {
        for (uint32_t i = 0; i < x->nkid; i++)
            if (!naming_lhs(x->kid[i]) && x->kid[i]->kind != CEL__N_CONST) return false;
        return true;
    }
    if (x->kind == CEL__N_REL && x->op == CEL__R_EQ) return naming_lhs(x->kid[0]) && naming_lhs(x->kid[1]);
    return false;
}

static bool is_eq_rel(const cel__node *x) { return x->kind == CEL__N_REL && x->op == CEL__R_EQ; }

/* "x = 5+5+1 = 11" -> (x, 11); "x = 1/3 \approx 0.33" -> x = 1/3. */
static const cel__node *normalize_chain(cel__ctx *c, const cel__node *x)
{
    while (x->kind == CEL__N_REL && x->op == CEL__R_APPROX && is_eq_rel(x->kid[0])) x = x->kid[0];
    if (!is_eq_rel(x) || !is_eq_rel(x->kid[0])) return x;
    const cel__node *first = x->kid[0];
    while (is_eq_rel(first)) first = first->kid[0];
    cel__node *r = mknode(c, CEL__N_REL, 2);
    if (!r) return x;
    r->op = CEL__R_EQ;
    r->kid[0] = (cel__node *)first;
    r->kid[1] = x->kid[1];
    r->flags = (uint8_t)((first->flags | x->kid[1]->flags) & (CEL__NF_HAS_PM | CEL__NF_HAS_VAR));
    return r;
}

static const cel__node *unwrap(cel__ctx *c, const cel__node *x, const cel__node *other)
{
    for (int guard = 0; guard < 16 && x; guard++) {
        if (x->kind == CEL__N_REL && x->op == CEL__R_APPROX && is_eq_rel(x->kid[0])) {
            x = x->kid[0]; /* "t = 2/3 \approx 0.67": the approximation is not the answer */
            continue;
        }
        if (is_eq_rel(x) && is_eq_rel(x->kid[0])) {
            /* against a bare value, a chain's last right side is the answer;
             * against an equation, the chain reads as (first = last) */
            if (other->kind != CEL__N_REL) {
                x = x->kid[1];
                continue;
            }
            const cel__node *y = normalize_chain(c, x);
            if (y != x) {
                x = y;
                continue;
            }
        }
        if (x->kind == CEL__N_REL && other->kind != CEL__N_REL &&
            ((x->op == CEL__R_EQ && naming_lhs(x->kid[0])) || x->op == CEL__R_APPROX ||
             (x->op == CEL__R_IN && naming_lhs(x->kid[0])))) {
            x = x->kid[1];
            continue;
        }
        if ((x->kind == CEL__N_LIST || x->kind == CEL__N_SET) && x->nkid == 1 && other->kind != CEL__N_LIST &&
            other->kind != CEL__N_SET) {
            x = x->kid[0];
            continue;
        }
        const cel__node *y = drop_units(c, x);
        if (y != x) {
            x = y;
            continue;
        }
        break;
    }
    return x;
}

/* Lower-cased letters and digits only. */
static size_t text_key(const cel__node *x, char *out, size_t cap, size_t len, int depth)
{
    if (depth > 64) return len;
    if (x->kind == CEL__N_TEXT || x->kind == CEL__N_VAR) {
        size_t i = 0;
        while (i < x->len) {
            uint32_t cp = cel__fold_cp(cel__utf8_next(x->str, x->len, &i));
            if (cp == 0 || cp == ' ') continue;
            char tmp[4];
            size_t k = cel_utf8_encode(cp, tmp);
            if (len + k < cap) memcpy(out + len, tmp, k);
            len += k;
        }
        return len;
    }
    if (x->kind == CEL__N_NUM) {
        char tmp[48];
        int k = x->exact && x->den == 1 ? snprintf(tmp, sizeof tmp, "%lld", (long long)x->num)
                                        : snprintf(tmp, sizeof tmp, "%.12g", x->approx);
        if (k > 0 && len + (size_t)k < cap) memcpy(out + len, tmp, (size_t)k);
        return len + (size_t)(k > 0 ? k : 0);
    }
    for (uint32_t i = 0; i < x->nkid; i++) len = text_key(x->kid[i], out, cap, len, depth + 1);
    return len;
}

static bool has_text(const cel__node *x, int depth)
{
    if (x->kind == CEL__N_TEXT) return true;
    if (depth > 300) return false;
    for (uint32_t i = 0; i < x->nkid; i++)
        if (has_text(x->kid[i], depth + 1)) return true;
    return false;
}

static bool is_container(const cel__node *x)
{
    return x->kind == CEL__N_LIST || x->kind == CEL__N_SET || x->kind == CEL__N_TUPLE || x->kind == CEL__N_UNION ||
           x->kind == CEL__N_MATRIX;
}

static bool eq(cel__ctx *c, const cel__node *a, const cel__node *b, int depth);

/* An element of a set: a node and, for a +- expression, one choice of signs. */
typedef struct {
    const cel__node *n;
    uint32_t bits;
    bool expanded;
} elem;

#define MAXELEM 256

/* Elements of a list/set (or a +- scalar), +- expanded. False when too many. */
static bool elements(const cel__node *x, elem *out, int *n)
{
    const cel__node *const *kv = is_container(x) ? (const cel__node *const *)x->kid : &x;
    uint32_t nk = is_container(x) ? x->nkid : 1;
    for (uint32_t i = 0; i < nk; i++) {
        int k = count_pm(kv[i], 0);
        if (k > 4) return false;
        for (uint32_t bits = 0; bits < (1u << k); bits++) {
            if (*n >= MAXELEM) return false;
            out[*n].n = kv[i], out[*n].bits = bits, out[*n].expanded = k > 0;
            (*n)++;
        }
    }
    return true;
}

static bool elem_eq(cel__ctx *c, const elem *x, const elem *y, int depth)
{
    if (!x->expanded && !y->expanded) return eq(c, x->n, y->n, depth + 1);
    if (is_container(x->n) || is_container(y->n)) return false;
    return scalar_eq(c, x->n, x->bits, y->n, y->bits);
}

/* Order-insensitive comparison (multisets): every element of a matches a
 * distinct element of b. */
static bool multiset_eq(cel__ctx *c, const cel__node *a, const cel__node *b, int depth)
{
    elem *ea = cel__alloc(c, 2 * MAXELEM * sizeof *ea);
    if (!ea) return false;
    elem *eb = ea + MAXELEM;
    int na = 0, nb = 0;
    if (!elements(a, ea, &na) || !elements(b, eb, &nb) || na != nb) return false;
    bool used[MAXELEM] = {false};
    for (int i = 0; i < na; i++) {
        bool found = false;
        for (int j = 0; j < nb && !found; j++) {
            if (used[j]) continue;
            if (elem_eq(c, &ea[i], &eb[j], depth)) used[j] = found = true;
            if (c->fail) return false;
        }
        if (!found) return false;
    }
    return true;
}

static bool ordered_eq(cel__ctx *c, const cel__node *a, const cel__node *b, int depth)
{
    if (a->nkid != b->nkid) return false;
    for (uint32_t i = 0; i < a->nkid; i++)
        if (!eq(c, a->kid[i], b->kid[i], depth + 1)) return false;
    return true;
}

static bool container_eq(cel__ctx *c, const cel__node *a, const cel__node *b, int depth)
{
    int ka = a->kind, kb = b->kind;
    bool seta = ka == CEL__N_LIST || ka == CEL__N_SET, setb = kb == CEL__N_LIST || kb == CEL__N_SET;
    if (seta && setb) return multiset_eq(c, a, b, depth);
    /* a +- scalar against a list: {1+\sqrt2, 1-\sqrt2} = 1 \pm \sqrt2 */
    if ((seta && !is_container(b) && (b->flags & CEL__NF_HAS_PM)) ||
        (setb && !is_container(a) && (a->flags & CEL__NF_HAS_PM)))
        return multiset_eq(c, a, b, depth);
    if (ka == CEL__N_TUPLE && kb == CEL__N_TUPLE)
        return a->lb == b->lb && a->rb == b->rb && ordered_eq(c, a, b, depth);
    /* (1, 2) written without its parentheses */
    if ((ka == CEL__N_TUPLE && a->lb == '(' && a->rb == ')' && kb == CEL__N_LIST) ||
        (kb == CEL__N_TUPLE && b->lb == '(' && b->rb == ')' && ka == CEL__N_LIST))
        return ordered_eq(c, a, b, depth);
    if (ka == CEL__N_MATRIX && kb == CEL__N_MATRIX)
        return a->rows == b->rows && a->cols == b->cols && ordered_eq(c, a, b, depth);
    /* a row or column vector against a tuple */
    if ((ka == CEL__N_MATRIX && kb == CEL__N_TUPLE && (a->rows == 1 || a->cols == 1) && b->lb == '(' && b->rb == ')') ||
        (kb == CEL__N_MATRIX && ka == CEL__N_TUPLE && (b->rows == 1 || b->cols == 1) && a->lb == '(' && a->rb == ')'))
        return ordered_eq(c, a, b, depth);
    if (ka == CEL__N_UNION && kb == CEL__N_UNION) {
        /* unions are sets of intervals */
        cel__node la = *a, lb = *b;
        la.kind = lb.kind = CEL__N_SET;
        return multiset_eq(c, &la, &lb, depth);
    }
    return false;
}

static bool rel_eq(cel__ctx *c, const cel__node *a, const cel__node *b, int depth)
{
    static const int flip[] = {CEL__R_EQ, CEL__R_GT, CEL__R_GE, CEL__R_LT, CEL__R_LE, CEL__R_NE, CEL__R_APPROX, -1};
    if (a->op == b->op && eq(c, a->kid[0], b->kid[0], depth + 1) && eq(c, a->kid[1], b->kid[1], depth + 1))
        return true;
    if (flip[a->op & 7] == b->op && eq(c, a->kid[0], b->kid[1], depth + 1) && eq(c, a->kid[1], b->kid[0], depth + 1))
        return true;
    if (c->fail) return false;
    /* canonical forms: l < r (or <=, =, !=), with > and >= turned around */
    const cel__node *al = a->kid[0], *ar = a->kid[1], *bl = b->kid[0], *br = b->kid[1];
    int ao = a->op, bo = b->op;
    if (ao == CEL__R_GT || ao == CEL__R_GE) ao = flip[ao], al = a->kid[1], ar = a->kid[0];
    if (bo == CEL__R_GT || bo == CEL__R_GE) bo = flip[bo], bl = b->kid[1], br = b->kid[0];
    bool ordered = ao == CEL__R_LT || ao == CEL__R_LE;
    if (ao == bo && (ordered || ao == CEL__R_EQ || ao == CEL__R_NE) && ((a->flags | b->flags) & CEL__NF_HAS_VAR) &&
        !has_text(a, 0) && !has_text(b, 0) && !is_container(al) && !is_container(ar) && !is_container(bl) &&
        !is_container(br) && !is_eq_rel(al) && !is_eq_rel(bl)) {
        /* relations with the same solutions up to a factor: 2x+2y=2 vs x+y=1,
         * -x > -1 vs x < 1. Compare (l1-r1) = k (l2-r2) with k from one
         * evaluation point (k > 0 for inequalities). */
        cel__node *da = mknode(c, CEL__N_ADD, 2), *db = mknode(c, CEL__N_ADD, 2);
        cel__node *na = mknode(c, CEL__N_NEG, 1), *nb = mknode(c, CEL__N_NEG, 1);
        if (!da || !db || !na || !nb) return false;
        na->kid[0] = (cel__node *)ar, nb->kid[0] = (cel__node *)br;
        da->kid[0] = (cel__node *)al, da->kid[1] = na;
        db->kid[0] = (cel__node *)bl, db->kid[1] = nb;
        env V;
        memset(&V, 0, sizeof V);
        collect_vars(&V, da, 0);
        collect_vars(&V, db, 0);
        if (V.nv == 0 || V.nv >= MAXV) return false;
        for (int i = 0; i < V.nv; i++) V.v[i] = 0.7 + 0.37 * i;
        val x = eval_with(c, da, 0, &V, false), y = eval_with(c, db, 0, &V, false);
        if (!x.ok || !y.ok || cabs(y.z) < 1e-12) return false;
        double complex k = x.z / y.z;
        cel__node *kn = mknode(c, CEL__N_NUM, 0), *m = mknode(c, CEL__N_MUL, 2);
        if (!kn || !m || fabs(cimag(k)) > 1e-12 || cabs(k) < 1e-12) return false;
        if (ordered && creal(k) < 0) return false;
        kn->exact = false, kn->approx = creal(k);
        m->kid[0] = kn, m->kid[1] = db;
        return scalar_eq_bits(c, da, 0, m, 0, false, false);
    }
    return false;
}

/* Digits of an integer literal too big for int64, without separators and
 * leading zeros; 0 when the literal is not such an integer. */
static size_t big_digits(const cel__node *x, char *out, size_t cap)
{
    if (x->kind != CEL__N_NUM || x->exact || !x->str) return 0;
    size_t k = 0;
    for (size_t i = 0; i < x->len; i++) {
        char ch = x->str[i];
        if (ch >= '0' && ch <= '9') {
            if (k == 0 && ch == '0') continue;
            if (k + 1 >= cap) return 0;
            out[k++] = ch;
        } else if (!(ch == ',' || ch == ' ' || ch == '{' || ch == '}' || ch == '\\' || ch == '!')) {
            return 0; /* a decimal point, an exponent: not an integer literal */
        }
    }
    return k;
}

/* x < a, a <= x, a < x < b ... with x a lone variable, as an interval. */
static cel__node *rel_to_interval(cel__ctx *c, const cel__node *r)
{
    if (r->kind != CEL__N_REL) return NULL;
    int op = r->op;
    if (op != CEL__R_LT && op != CEL__R_LE && op != CEL__R_GT && op != CEL__R_GE) return NULL;
    const cel__node *lo = NULL, *hi = NULL;
    bool lo_closed = false, hi_closed = false;
    const cel__node *l = r->kid[0], *rr = r->kid[1];
    bool less = op == CEL__R_LT || op == CEL__R_LE, closed = op == CEL__R_LE || op == CEL__R_GE;
    if (l->kind == CEL__N_REL) {
        /* a < x < b: the inner relation must be the same direction */
        const cel__node *in = l;
        if (in->op != op && !((in->op == CEL__R_LT || in->op == CEL__R_LE) == less &&
                              (in->op == CEL__R_LT || in->op == CEL__R_LE || in->op == CEL__R_GT || in->op == CEL__R_GE)))
            return NULL;
        if (in->kid[1]->kind != CEL__N_VAR || in->kid[0]->kind == CEL__N_REL) return NULL;
        bool in_closed = in->op == CEL__R_LE || in->op == CEL__R_GE;
        if (less) lo = in->kid[0], lo_closed = in_closed, hi = rr, hi_closed = closed;
        else hi = in->kid[0], hi_closed = in_closed, lo = rr, lo_closed = closed;
    } else if (l->kind == CEL__N_VAR) {
        if (less) hi = rr, hi_closed = closed;
        else lo = rr, lo_closed = closed;
    } else if (rr->kind == CEL__N_VAR) {
        if (less) lo = l, lo_closed = closed;
        else hi = l, hi_closed = closed;
    } else {
        return NULL;
    }
    cel__node *t = mknode(c, CEL__N_TUPLE, 2);
    if (!t) return NULL;
    if (!lo) {
        cel__node *inf = mknode(c, CEL__N_CONST, 0), *neg = mknode(c, CEL__N_NEG, 1);
        if (!inf || !neg) return NULL;
        inf->op = CEL__C_INF, neg->kid[0] = inf, lo = neg;
    }
    if (!hi) {
        cel__node *inf = mknode(c, CEL__N_CONST, 0);
        if (!inf) return NULL;
        inf->op = CEL__C_INF, hi = inf;
    }
    t->kid[0] = (cel__node *)lo, t->kid[1] = (cel__node *)hi;
    t->lb = lo_closed ? '[' : '(';
    t->rb = hi_closed ? ']' : ')';
    return t;
}

static bool eq(cel__ctx *c, const cel__node *a, const cel__node *b, int depth)
{
    if (depth > 64 || !cel__charge(c, 1)) return false;
    a = unwrap(c, a, b);
    b = unwrap(c, b, a);
    if (!a || !b) return false;
    /* an inequality in one variable against an interval: x < 2 = (-\infty, 2) */
    if (a->kind == CEL__N_REL && (b->kind == CEL__N_TUPLE || b->kind == CEL__N_UNION)) {
        cel__node *t = rel_to_interval(c, a);
        if (t) a = t;
    } else if (b->kind == CEL__N_REL && (a->kind == CEL__N_TUPLE || a->kind == CEL__N_UNION)) {
        cel__node *t = rel_to_interval(c, b);
        if (t) b = t;
    }
    /* integers too big for exact arithmetic compare digit by digit */
    char da[128], db[128];
    size_t la = big_digits(a, da, sizeof da), lb = la ? big_digits(b, db, sizeof db) : 0;
    if (la && lb) return la == lb && memcmp(da, db, la) == 0;
    if (a->kind == CEL__N_REL && b->kind == CEL__N_REL) return rel_eq(c, a, b, depth);
    if (a->kind == CEL__N_REL || b->kind == CEL__N_REL) return false;
    if (is_container(a) || is_container(b)) return container_eq(c, a, b, depth);
    if (has_text(a, 0) || has_text(b, 0)) {
        if (!is_texty(a) && a->kind != CEL__N_VAR) return false;
        if (!is_texty(b) && b->kind != CEL__N_VAR) return false;
        char ka[256], kb[256];
        size_t la = text_key(a, ka, sizeof ka, 0, 0), lb = text_key(b, kb, sizeof kb, 0, 0);
        return la == lb && la < sizeof ka && memcmp(ka, kb, la) == 0;
    }
    if ((a->flags | b->flags) & CEL__NF_HAS_PM) return multiset_eq(c, a, b, depth);
    return scalar_eq(c, a, 0, b, 0);
}

bool cel__math_equal(cel__ctx *c, const cel__node *a, const cel__node *b)
{
    if (!a || !b) return false;
    return eq(c, a, b, 0) && !c->fail;
}

/* ------------------------------------------------------------ grading */

/* A canonical raw form for the fast path: no white space, '$', \left,
 * \right, spacing commands; \dfrac/\tfrac as \frac; no trailing '.'. */
static size_t raw_norm(const char *s, size_t n, char *o, size_t cap)
{
    static const char *const drop[] = {"\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\ "};
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        char ch = s[i];
        if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '$') {
            i++;
            continue;
        }
        bool dropped = false;
        if (ch == '\\') {
            for (size_t d = 0; d < sizeof drop / sizeof drop[0] && !dropped; d++) {
                size_t m = strlen(drop[d]);
                if (i + m <= n && memcmp(s + i, drop[d], m) == 0 &&
                    (m == 2 || i + m == n || !((s[i + m] | 0x20) >= 'a' && (s[i + m] | 0x20) <= 'z'))) {
                    i += m, dropped = true;
                }
            }
            if (!dropped && (i + 6 <= n) && (memcmp(s + i, "\\dfrac", 6) == 0 || memcmp(s + i, "\\tfrac", 6) == 0)) {
                if (k + 5 >= cap) return cap;
                memcpy(o + k, "\\frac", 5);
                k += 5, i += 6, dropped = true;
            }
        }
        if (dropped) continue;
        if (k + 1 >= cap) return cap;
        o[k++] = ch;
        i++;
    }
    while (k && o[k - 1] == '.') k--;
    o[k] = '\0';
    return k;
}

/* The last math segment ($...$, $$...$$, \(...\), \[...\]) of s[0..n). */
static bool last_math_segment(const char *s, size_t n, cel__span *out)
{
    bool found = false;
    size_t i = 0;
    while (i < n) {
        size_t b = 0, e = 0, after = 0;
        if (s[i] == '\\' && i + 1 < n && (s[i + 1] == '(' || s[i + 1] == '[')) {
            const char close[2] = {'\\', s[i + 1] == '(' ? ')' : ']'};
            size_t k = i + 2;
            while (k + 1 < n && !(s[k] == close[0] && s[k + 1] == close[1])) k++;
            if (k + 1 >= n) break;
            b = i + 2, e = k, after = k + 2;
        } else if (s[i] == '\\') {
            i += 2; /* \$ is a dollar sign, not math */
            continue;
        } else if (s[i] == '$') {
            bool dbl = i + 1 < n && s[i + 1] == '$';
            size_t k = i + (dbl ? 2 : 1);
            while (k < n && !(s[k] == '$' && s[k - 1] != '\\')) k++;
            if (k >= n) break;
            b = i + (dbl ? 2 : 1), e = k, after = k + (dbl && k + 1 < n && s[k + 1] == '$' ? 2 : 1);
        } else {
            i++;
            continue;
        }
        if (e > b) {
            out->p = s + b, out->n = e - b, out->off = b, out->src = CEL_EXTRACT_LAST_MATH;
            found = true;
        }
        i = after;
    }
    return found;
}

/* The fallback answer of free text: its last math segment or its last number,
 * whichever ends later (a number inside the segment belongs to it). */
static bool last_value(const char *s, size_t n, cel__span *out)
{
    cel__span m, k;
    bool hm = last_math_segment(s, n, &m), hk = cel__last_number(s, n, &k);
    if (hm && hk) {
        *out = k.off + k.n > m.off + m.n ? k : m;
        return true;
    }
    if (hm) *out = m;
    else if (hk) *out = k;
    return hm || hk;
}

static bool tree_has_text(const cel__node *x) { return x && has_text(x, 0); }

/* Equal answers as written (after light normalization) or as mathematics.
 * alt: the answer is free text (an answer phrase); when it does not parse or
 * reads as prose, its last math segment or number is compared instead and
 * *used is set to it. */
static bool answers_equal(cel__ctx *c, cel__span *ans, const char *ref, size_t rn, const char **why, bool alt)
{
    const char *a = ans->p;
    size_t an = ans->n;
    char na[512], nr[512];
    size_t la = raw_norm(a, an, na, sizeof na), lr = raw_norm(ref, rn, nr, sizeof nr);
    if (la < sizeof na && la == lr && memcmp(na, nr, la) == 0 && la > 0) return true;
    const char *w = NULL;
    cel__node *tr = cel__latex_parse(c, ref, rn, &w);
    if (c->fail) return false;
    cel__node *ta = cel__latex_parse(c, a, an, &w);
    if (c->fail) return false;
    if (alt && (!ta || tree_has_text(ta))) {
        cel__span v;
        if (last_value(a, an, &v) && v.n < an) {
            v.off += ans->off;
            cel__trim_answer(&v);
            cel__node *tv = v.n ? cel__latex_parse(c, v.p, v.n, &w) : NULL;
            if (c->fail) return false;
            if (tv) {
                ta = tv;
                v.src = ans->src;
                *ans = v;
            }
        }
    }
    if (!ta) {
        /* "x = 5 (after simplifying)": try the part after the last '=' */
        const char *eqs = NULL;
        for (size_t i = 0; i < an; i++)
            if (a[i] == '=') eqs = a + i;
        if (eqs) ta = cel__latex_parse(c, eqs + 1, an - (size_t)(eqs + 1 - a), &w);
        if (c->fail) return false;
    }
    if (!ta) {
        *why = "unparsable_answer";
        return false;
    }
    if (!tr) {
        *why = "unparsable_reference";
        return false;
    }
    return cel__math_equal(c, ta, tr);
}

/* "\boxed{1}, \boxed{2}" (several answers boxed one by one at the end):
 * the list "1, 2". Boxes count as adjacent when only white space, commas,
 * '$', '.' or "and" separate them. sp is the last box's content; on a join
 * it becomes an arena copy (offset: the first box's). */
static void join_adjacent_boxed(cel__ctx *c, const char *s, cel__span *sp)
{
    enum { MAXB = 16 };
    cel__span box[MAXB];
    int nb = 0;
    box[nb++] = *sp;
    size_t start = sp->off; /* content start of the earliest box so far */
    while (nb < MAXB) {
        /* the text before "\boxed{" of the earliest box */
        size_t k = start;
        while (k > 0 && s[k - 1] != '\\') k--;
        if (k == 0) break;
        size_t cmd = k - 1; /* index of '\' */
        size_t e = cmd;
        for (;;) {
            while (e > 0 && (s[e - 1] == ' ' || s[e - 1] == ',' || s[e - 1] == '$' || s[e - 1] == '\n' ||
                             s[e - 1] == '.'))
                e--;
            if (e >= 3 && strncmp(s + e - 3, "and", 3) == 0) e -= 3;
            else break;
        }
        if (e == 0 || s[e - 1] != '}') break;
        cel__span prev;
        if (!cel__last_boxed(s, e, &prev) || prev.off + prev.n + 1 != e) break;
        box[nb++] = prev;
        start = prev.off;
    }
    if (nb == 1) return;
    size_t total = 0;
    for (int i = 0; i < nb; i++) total += box[i].n + 2;
    char *j = cel__alloc(c, total + 1);
    if (!j) return;
    size_t w = 0;
    for (int i = nb - 1; i >= 0; i--) {
        memcpy(j + w, box[i].p, box[i].n);
        w += box[i].n;
        if (i) j[w++] = ',', j[w++] = ' ';
    }
    j[w] = '\0';
    sp->p = j, sp->n = w, sp->off = box[nb - 1].off;
}

void cel__grade_math(cel__ctx *c, const cel_verify_item *it, const char *resp, size_t n, cel_verify_result *r)
{
    size_t reg = cel__answer_region(resp, n);
    const char *s = resp + reg;
    size_t sn = n - reg;
    cel__span sp;
    bool got = cel__last_boxed(s, sn, &sp), phrase = false;
    if (got) join_adjacent_boxed(c, s, &sp);
    if (!got && cel__answer_phrase(c, s, sn, &sp)) {
        got = phrase = true;
        cel__cut_sentence(&sp);
    }
    if (!got && !c->fail && c->cfg->last_number_fallback) got = last_value(s, sn, &sp);
    if (!got) {
        cel__set_reason(r, c->fail ? c->fail : "no_answer");
        return;
    }
    sp.off += reg;
    cel__trim_answer(&sp);
    if (sp.n == 0) {
        cel__set_extracted(r, sp.p, sp.n, sp.off, sp.src);
        cel__set_reason(r, "no_answer");
        return;
    }
    if (sp.n > c->cfg->max_answer_bytes) {
        cel__set_extracted(r, sp.p, sp.n, sp.off, sp.src);
        cel__set_reason(r, "answer_too_long");
        return;
    }
    /* a reference written as a worked solution: its last \boxed{} */
    cel__span ref = {it->reference, strlen(it->reference), 0, CEL_EXTRACT_NONE};
    cel__span rb;
    if (cel__last_boxed(ref.p, ref.n, &rb)) ref = rb;
    cel__trim_answer(&ref);
    const char *why = NULL;
    r->correct = answers_equal(c, &sp, ref.p, ref.n, &why, phrase && c->cfg->last_number_fallback);
    cel__set_extracted(r, sp.p, sp.n, sp.off, sp.src);
    cel__set_reason(r, r->correct ? "correct" : why ? why : "wrong_answer");
}
