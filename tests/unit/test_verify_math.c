/* Math grading: the LaTeX parser and equality, through the public API.
 * Each row is graded as "\boxed{<answer>}" against the reference. */
#include "unit/test_verify_common.h"

static const vcase numbers[] = {
    {"42", "42", 1}, {"42", "43", 0}, {"-7", "-7", 1}, {"-7", "7", 0}, {"0", "0", 1}, {"0", "-0", 1},
    {"3.0", "3", 1}, {"3.00", "3", 1}, {"3.01", "3", 0}, {"0.5", "\\frac{1}{2}", 1}, {".5", "0.5", 1},
    {"\\frac{1}{2}", "0.5", 1}, {"\\dfrac{1}{2}", "\\frac12", 1}, {"\\tfrac{3}{4}", "0.75", 1},
    {"1/2", "\\frac{1}{2}", 1}, {"2/4", "1/2", 1}, {"1/3", "0.3333", 0}, {"\\frac{2}{3}", "0.6667", 0},
    {"1,000", "1000", 1}, {"1,000,000", "1000000", 1}, {"1{,}000", "1000", 1}, {"1\\,000", "1000", 1},
    {"10^3", "1000", 1}, {"1e3", "1000", 1}, {"1E3", "1000", 1}, {"2.5e-3", "0.0025", 1},
    {"1.5 \\times 10^{4}", "15000", 1}, {"1.5\\cdot10^4", "15000", 1}, {"6.02 \\times 10^{23}", "6.02e23", 1},
    {"1000001", "1000000", 0}, {"123456789", "123456790", 0}, {"12345678901234567890", "12345678901234567890", 1},
    {"\\$1,000", "1000", 1}, {"\\$5.50", "5.5", 1}, {"5\\%", "5\\%", 1}, {"50\\%", "0.5", 1}, {"50\\%", "50", 1},
    {"50%", "\\frac{1}{2}", 1}, {"0.5", "50\\%", 1}, {"25\\%", "0.5", 0}, {"12.5\\%", "\\frac18", 1},
    {"-\\frac{3}{4}", "-0.75", 1}, {"\\frac{-3}{4}", "-\\frac34", 1}, {"-\\frac{3}{4}", "\\frac{3}{-4}", 1},
    {"\\frac{3}{4}", "-0.75", 0}, {"2\\frac{1}{2}", "\\frac{5}{2}", 1}, {"2\\frac{1}{2}", "2.5", 1},
    {"-2\\frac{1}{2}", "-2.5", 1}, {"2\\frac12", "1", 0}, {"2 \\cdot \\frac{1}{2}", "1", 1},
    {"\\frac{10}{4}", "\\frac{5}{2}", 1}, {"\\frac{1}{3}", "0.333333333", 1}, {"0.1+0.2", "0.3", 1},
    {"007", "7", 1}, {"3.14", "\\pi", 0}, {"3.14159265358979", "\\pi", 1}, {"22/7", "\\pi", 0},
    {"\\frac{6}{3}", "2", 1}, {"4/2", "2", 1}, {"+5", "5", 1}, {"--5", "5", 1}, {"5.", "5", 1},
    {"1.000", "1", 1}, {"100", "1e2", 1}, {"0.001", "10^{-3}", 1}, {"2^{-1}", "0.5", 1}, {"2^-1", "1/2", 1},
};

static const vcase roots_powers[] = {
    {"2\\sqrt{2}", "\\sqrt{8}", 1}, {"\\sqrt{8}", "2\\sqrt2", 1}, {"\\sqrt{2}", "1.41421356", 1},
    {"\\sqrt{2}", "1.41", 0}, {"\\sqrt{4}", "2", 1}, {"\\sqrt{9}", "-3", 0}, {"\\sqrt[3]{8}", "2", 1},
    {"\\sqrt[3]{-8}", "-2", 1}, {"8^{1/3}", "2", 1}, {"4^{\\frac{1}{2}}", "2", 1}, {"2^{10}", "1024", 1},
    {"2^10", "1024", 1}, {"x^{2}", "x^2", 1}, {"\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}", 1},
    {"\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}", 1}, {"3\\sqrt{3}", "\\sqrt{27}", 1},
    {"\\sqrt{12}", "2\\sqrt{3}", 1}, {"\\sqrt{12}", "3\\sqrt{2}", 0}, {"\\sqrt 2", "\\sqrt{2}", 1},
    {"\\sqrt2/2", "\\frac{\\sqrt{2}}{2}", 1}, {"2^{3^2}", "512", 1}, {"(-2)^3", "-8", 1}, {"-2^2", "-4", 1},
    {"(-2)^2", "4", 1}, {"√2", "\\sqrt{2}", 1}, {"x²", "x^2", 1}, {"5!", "120", 1}, {"\\binom{5}{2}", "10", 1},
    {"\\dbinom{6}{3}", "20", 1}, {"\\frac{5!}{3!}", "20", 1}, {"e^{i\\pi}", "-1", 1}, {"e^0", "1", 1},
    {"\\sqrt{-4}", "2i", 1}, {"i^2", "-1", 1}, {"(1+i)^2", "2i", 1}, {"3+4i", "3+4i", 1}, {"3+4i", "3-4i", 0},
    {"\\frac{1+\\sqrt{5}}{2}", "\\frac{\\sqrt5+1}{2}", 1}, {"\\frac{1-\\sqrt{5}}{2}", "\\frac{1+\\sqrt5}{2}", 0},
};

static const vcase constants_functions[] = {
    {"\\pi", "\\pi", 1}, {"2\\pi", "\\pi \\cdot 2", 1}, {"\\frac{\\pi}{2}", "\\pi/2", 1}, {"\\pi r^2", "r^2\\pi", 1},
    {"π", "\\pi", 1}, {"\\frac{3\\pi}{4}", "\\frac34\\pi", 1}, {"e", "2.718281828459045", 1}, {"e^2", "e^{2}", 1},
    {"\\sin(\\pi/6)", "\\frac12", 1}, {"\\sin\\frac{\\pi}{6}", "0.5", 1}, {"\\cos 0", "1", 1},
    {"\\sin^2 x + \\cos^2 x", "1", 1}, {"\\tan\\frac{\\pi}{4}", "1", 1}, {"\\ln e", "1", 1}, {"\\ln(e^3)", "3", 1},
    {"\\log_2 8", "3", 1}, {"\\log_{2}{8}", "3", 1}, {"\\log_{10} 1000", "3", 1}, {"\\log_3 10", "\\frac{\\ln 10}{\\ln 3}", 1},
    {"\\arcsin(1)", "\\frac{\\pi}{2}", 1}, {"\\sin^{-1}(1)", "\\frac{\\pi}{2}", 1}, {"\\arctan 1", "\\pi/4", 1},
    {"\\sin 30^\\circ", "\\frac{1}{2}", 1}, {"\\cos 60^{\\circ}", "0.5", 1}, {"|{-3}|", "3", 1}, {"|-3|", "3", 1},
    {"\\left|-5\\right|", "5", 1}, {"\\lfloor 3.7 \\rfloor", "3", 1}, {"\\lceil 3.2 \\rceil", "4", 1},
    {"\\exp(0)", "1", 1}, {"\\sin x", "\\sin(x)", 1}, {"\\sin 2x", "2\\sin x\\cos x", 1}, {"\\sin x \\cos x", "\\frac{\\sin 2x}{2}", 1},
    {"\\sin(x)", "\\cos(x)", 0}, {"\\ln(xy)", "\\ln x + \\ln y", 1}, {"\\log(x)", "\\ln(x)", 1},
    {"\\infty", "\\infty", 1}, {"-\\infty", "\\infty", 0}, {"\\gcd(12, 18)", "6", 1}, {"\\max(3,7)", "7", 1},
};

static const vcase symbolic[] = {
    {"x^2-1", "(x-1)(x+1)", 1}, {"(x+1)^2", "x^2+2x+1", 1}, {"(x+1)^2", "x^2+1", 0}, {"2x", "x+x", 1},
    {"2x", "2y", 0}, {"\\frac{x}{2}", "0.5x", 1}, {"\\frac{1}{x}", "x^{-1}", 1}, {"x y", "yx", 1},
    {"xy", "x\\cdot y", 1}, {"a^2+b^2", "b^2+a^2", 1}, {"a^2-b^2", "(a-b)(a+b)", 1}, {"\\frac{x^2-1}{x-1}", "x+1", 1},
    {"3x+2", "2+3x", 1}, {"3x+2", "3x-2", 0}, {"x^3", "x\\cdot x\\cdot x", 1}, {"\\sqrt{x^2}", "x", 1},
    {"e^{x}e^{y}", "e^{x+y}", 1}, {"2\\sin\\theta\\cos\\theta", "\\sin 2\\theta", 1}, {"\\alpha+\\beta", "\\beta+\\alpha", 1},
    {"x_1+x_2", "x_2+x_1", 1}, {"x_1", "x_2", 0}, {"n(n+1)/2", "\\frac{n^2+n}{2}", 1}, {"\\frac{n(n+1)}{2}", "\\binom{n+1}{2}", 1}, {"\\frac{n(n-1)}{2}", "\\binom{n+1}{2}", 0},
    {"(x-2)(x-3)", "x^2-5x+6", 1}, {"4x^2", "(2x)^2", 1}, {"x^2", "2x", 0}, {"k", "k", 1}, {"k", "m", 0},
    {"\\frac{a}{b}", "a/b", 1}, {"\\frac{a+b}{c}", "\\frac{a}{c}+\\frac{b}{c}", 1}, {"1/(2x)", "\\frac{1}{2x}", 1},
};

static const vcase equations_units[] = {
    {"x=3", "3", 1}, {"x = 3", "x=3", 1}, {"3", "x=3", 1}, {"x=3", "4", 0}, {"y = 2x + 1", "2x+1", 1},
    {"y=2x+1", "y = 1 + 2x", 1}, {"y=2x+1", "y=2x-1", 0}, {"2x+2y=2", "x+y=1", 1}, {"x+y=1", "x+y=2", 0},
    {"f(x) = x^2", "x^2", 1}, {"a = 5", "5", 1}, {"k=-1", "-1", 1}, {"x \\approx 3.14", "3.14", 1},
    {"5 \\text{ cm}", "5", 1}, {"5\\text{ cm}", "5 \\text{cm}", 1}, {"5 \\text{ cm}^2", "5", 1},
    {"12\\mbox{ inches}", "12", 1}, {"7 \\mathrm{m}", "7", 1}, {"30 meters", "30", 1}, {"30 meters", "31", 0},
    {"\\$ 20", "20", 1}, {"20 dollars", "20", 1}, {"\\text{20}", "20", 1}, {"10 \\text{ apples}", "10", 1},
    {"90^\\circ", "90", 1}, {"90^{\\circ}", "90", 1}, {"90°", "90", 1}, {"90^\\circ", "\\frac{\\pi}{2}", 1},
    {"45^\\circ", "90", 0}, {"\\frac{\\pi}{3}", "60^\\circ", 1}, {"x > 3", "x>3", 1}, {"x > 3", "3 < x", 1},
    {"x \\ge 3", "x \\geq 3", 1}, {"x > 3", "x \\ge 3", 0}, {"x \\le 2", "x \\leq 2", 1}, {"x≤2", "x\\le 2", 1},
    {"\\text{Evelyn}", "Evelyn", 1}, {"\\text{no solution}", "\\text{No Solution}", 1}, {"\\text{yes}", "\\text{no}", 0},
    {"x=5, y=3", "x=5,y=3", 1},
};

static const vcase containers[] = {
    {"(1,2)", "(1, 2)", 1}, {"(1,2)", "(2,1)", 0}, {"(1,2)", "[1,2]", 0}, {"[1,2]", "[1, 2]", 1},
    {"[1,2)", "[1,2)", 1}, {"[1,2)", "[1,2]", 0}, {"(1,2]", "(1,2)", 0}, {"(-\\infty, 3]", "(-\\infty,3]", 1},
    {"(-\\infty, 3)", "(-\\infty,3]", 0}, {"\\left(-\\infty, 3\\right]", "(-\\infty,3]", 1},
    {"(0, \\infty)", "(0,\\infty)", 1}, {"(-\\infty,1) \\cup (2,\\infty)", "(2,\\infty)\\cup(-\\infty,1)", 1},
    {"(-\\infty,1) \\cup (2,\\infty)", "(-\\infty,1] \\cup (2,\\infty)", 0}, {"\\{1,2,3\\}", "\\{3,2,1\\}", 1},
    {"\\{1,2,3\\}", "\\{1,2\\}", 0}, {"\\{1,2\\}", "1, 2", 1}, {"1, 2", "2, 1", 1}, {"1,2,3", "3,2,1", 1},
    {"2, 3", "2, 4", 0}, {"x=2, x=3", "2,3", 1}, {"x = 2 \\text{ or } x = 3", "2, 3", 1}, {"2 and 3", "3, 2", 1},
    {"(1,2), (3,4)", "(3,4), (1,2)", 1}, {"(1,2), (3,4)", "(2,1), (3,4)", 0}, {"(1, 2)", "1, 2", 1},
    {"\\{5\\}", "5", 1}, {"\\emptyset", "\\{\\}", 1}, {"\\emptyset", "\\{0\\}", 0}, {"(\\frac12, 3)", "(0.5, 3)", 1},
    {"1 \\pm \\sqrt{2}", "1+\\sqrt2, 1-\\sqrt2", 1}, {"1 \\pm \\sqrt{2}", "1-\\sqrt2, 1+\\sqrt2", 1},
    {"1 \\pm \\sqrt{2}", "1+\\sqrt2", 0}, {"\\pm 2", "2, -2", 1}, {"x = \\pm 3", "-3, 3", 1},
    {"\\frac{-1 \\pm \\sqrt{5}}{2}", "\\frac{-1+\\sqrt5}{2}, \\frac{-1-\\sqrt5}{2}", 1},
    {"\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}", 1},
    {"\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix}1&3\\\\2&4\\end{pmatrix}", 0},
    {"\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "(1,2)", 1}, {"\\begin{pmatrix} 1 & 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", 0},
    {"\\begin{pmatrix} \\frac12 & 0 \\\\ 0 & 1 \\end{pmatrix}", "\\begin{pmatrix} 0.5 & 0 \\\\ 0 & 1 \\end{pmatrix}", 1},
    {"(1,2,3)", "(1,2,3)", 1}, {"(1,2,3)", "(1,2)", 0}, {"\\langle 1, 2\\rangle", "(1,2)", 1},
    {"x \\in [2, 5]", "[2,5]", 1}, {"[2,5]", "(2,5)", 0}, {"(1, 1000)", "(1,1000)", 1},
};

/* Notation seen in model outputs and graders' regressions (written here). */
static const vcase notation[] = {
    {"2 500", "2500", 1}, {"12 345 678", "12345678", 1}, {"\\$25,\\!000", "25000", 1}, {"3,\\!141", "3141", 1},
    {"7 3/4", "\\frac{31}{4}", 1}, {"-7 3/4", "-7.75", 1}, {"7 3/4", "7", 0}, {"7 3/0", "7", 0}, {"2 1/2\\%", "0.025", 1},
    {"35 percent", "0.35", 1}, {"35 pct", "35\\%", 1}, {"35 percentage", "35", 1}, {"0,25", "0.25", 1},
    {"3,75", "3.75", 1}, {"2,3", "3,2", 1}, {"2,3", "2.3", 0}, {"4,096", "4096", 1},
    {"y = 3 + 4 = 7", "7", 1}, {"y = 3 + 4 = 7", "y=7", 1}, {"t = 2/3 \\approx 0.67", "\\frac23", 1},
    {"8 = 2a + b", "2a+b", 0}, {"3p + q = 0", "0", 0}, {"w = 4", "4", 1},
    {"-y < -2", "y > 2", 1}, {"-y < -2", "y < 2", 0}, {"2y \\le 6", "y \\le 3", 1}, {"3 \\geq t", "t \\le 3", 1},
    {"y = 2x - 4", "2x - y - 4 = 0", 1}, {"y = 2x - 4", "2x - y + 4 = 0", 0}, {"{2,5}", "(2,5)", 1},
    {"{5,2}", "(2,5)", 0}, {"\\left( \\tfrac{1}{4}, 2 \\right)", "(0.25,2)", 1}, {"\\frac52\\pi", "\\frac{5\\pi}{2}", 1},
    {"\\sqrt5+\\sqrt3", "\\sqrt{3}+\\sqrt{5}", 1}, {"\\tan^2\\theta + 1", "\\sec^2\\theta", 1},
    {"\\begin{pmatrix}\\frac12 \\\\ 3\\end{pmatrix}", "\\begin{pmatrix}0.5\\\\3\\end{pmatrix}", 1},
    {"\\left[\\begin{array}{cc}1 & 0 \\\\ 0 & 2\\end{array}\\right]", "\\begin{pmatrix}1&0\\\\0&2\\end{pmatrix}", 1},
    {"\\{-2\\} \\cup [1,4)", "\\{-2\\}\\cup[1,4)", 1}, {"\\{-2\\} \\cup [1,4)", "\\{-2\\}\\cup[1,4]", 0},
    {"0.\\overline{6}", "\\frac23", 1}, {"0.1\\overline{3}", "\\frac{2}{15}", 1}, {"0.\\overline{6}", "0.6", 0},
    {"(-\\infty, 5)", "x < 5", 1}, {"(-\\infty, 5]", "x < 5", 0}, {"y \\ge -1", "[-1,\\infty)", 1},
    {"(0, 3]", "0 < t \\le 3", 1}, {"[0, 3]", "0 < t \\le 3", 0},
    {"98765432109876543210", "98,765,432,109,876,543,210", 1}, {"98765432109876543211", "98765432109876543210", 0},
    {"7 \\text{ and } 8", "7, 8", 1}, {"101_2", "101_2", 1}, {"42 \\textnormal{ km}", "42", 1},
};

/* Whole responses against references written as worked solutions. */
static const vcase worked[] = {
    {"So the total is \\boxed{36}.", "We add the parts: $12+24=\\boxed{36}$.", 1},
    {"So the total is \\boxed{35}.", "We add the parts: $12+24=\\boxed{36}$.", 0},
    {"Final Answer: The number of marbles is 48. I hope it is correct.", "48", 1},
    {"Final Answer: The smallest $k$ is 9.", "9", 1},
    {"Final Answer: The smallest $k$ is 9.", "k", 0},
    {"Answer: Tom needs 15 more minutes", "15", 1},
    {"Thus the point is $(4, -1)$. Hope that helps", "(4,-1)", 1},
    {"Thus the point is $(4, -1)$. Hope that helps", "(4,1)", 0},
    {"The probability works out to 3/8 overall", "\\frac38", 1},
    {"We find $x=7$ and so the sum is 19", "19", 1},
    {"The investment grows to $\\$12,\\!500.75$.", "12500.75", 1},
    {"which gives an increase of 40%.", "40\\%", 1},
    {"The roots are $\\boxed{3}$ and $\\boxed{-5}$.", "-5, 3", 1},
    {"The roots are $\\boxed{3}$ and $\\boxed{-5}$.", "3", 0},
    {"First \\boxed{3}. Later we see more. Finally \\boxed{4}", "4", 1},
    {"is $\\boxed{45,\\! 200}$", "45200", 1},
    {"is $\\boxed{45, 200}$", "45200", 0},
    {"so the answer is 3/4, not 2/3.", "0.75", 1},
};

static const vcase wrong_or_garbage[] = {
    {"", "1", 0}, {"\\frac{1}{0}", "1", 0}, {"0/0", "0", 0}, {"((((", "1", 0}, {"1+", "1", 0}, {"x", "3", 0},
    {"3x", "3", 0}, {"\\frac{2", "1", 0}, {"\\sqrt{}", "0", 0}, {"\\text{}", "0", 0}, {"2 3", "6", 0},
    {"None", "0", 0}, {"undefined", "1", 0}, {"\\infty", "1e308", 0}, {"1/0", "\\infty", 0},
};

static void test_math_tables(void **state)
{
    (void)state;
    cel_verifier *v = tv_make(NULL);
    int fails = 0;
    fails += tv_run_table(v, CEL_TASK_MATH, "numbers", numbers, NROWS(numbers), "so \\boxed{%s}");
    fails += tv_run_table(v, CEL_TASK_MATH, "roots_powers", roots_powers, NROWS(roots_powers), "\\boxed{%s}");
    fails += tv_run_table(v, CEL_TASK_MATH, "constants_functions", constants_functions, NROWS(constants_functions),
                          "\\boxed{%s}");
    fails += tv_run_table(v, CEL_TASK_MATH, "symbolic", symbolic, NROWS(symbolic), "\\boxed{%s}");
    fails += tv_run_table(v, CEL_TASK_MATH, "equations_units", equations_units, NROWS(equations_units), "\\boxed{%s}");
    fails += tv_run_table(v, CEL_TASK_MATH, "containers", containers, NROWS(containers), "\\boxed{%s}");
    fails += tv_run_table(v, CEL_TASK_MATH, "wrong_or_garbage", wrong_or_garbage, NROWS(wrong_or_garbage),
                          "\\boxed{%s}");
    fails += tv_run_table(v, CEL_TASK_MATH, "notation", notation, NROWS(notation), "\\boxed{%s}");
    fails += tv_run_table(v, CEL_TASK_MATH, "worked", worked, NROWS(worked), NULL);
    cel_verifier_free(v);
    assert_int_equal(fails, 0);
}

/* Whole responses: extraction feeding the math grader. */
static const vcase responses[] = {
    {"We compute 2+2=4. So the answer is \\boxed{4}.", "4", 1},
    {"First \\boxed{3}, but wait, recheck: \\boxed{5}", "5", 1},
    {"First \\boxed{3}, but wait, recheck: \\boxed{5}", "3", 0},
    {"\\boxed{\\frac{1}{2}}", "0.5", 1},
    {"The final answer is $\\boxed{\\dfrac{3}{4}}$. I hope it is correct.", "0.75", 1},
    {"Final Answer: The final answer is $12$. I hope it is correct.", "12", 1},
    {"The answer is 7.", "7", 1},
    {"The answer is $x = 3$.", "3", 1},
    {"**Answer:** 15", "15", 1},
    {"Answer: 1,000 people", "1000", 1},
    {"<think>maybe 5? no, 6</think>The answer is 6", "6", 1},
    {"<think>the answer is 5</think>\n\\boxed{6}", "5", 0},
    {"We get 3 apples and then 4 more, for 7 in total", "7", 1},
    {"The result: after 2 steps we reach 10 and stop at 12", "12", 1},
    {"I am not sure.", "3", 0},
    {"\\fbox{9}", "9", 1},
    {"\\boxed 9", "9", 1},
    {"so we have \\boxed{(1, 2)}", "(1,2)", 1},
    {"The answer is: $\\frac{\\sqrt{3}}{2}$", "\\frac{\\sqrt3}{2}", 1},
    {"Thus \\boxed{x^2-1} is the simplified form", "(x-1)(x+1)", 1},
    {"the answer is \\boxed{\\text{(B)}}", "B", 1},
    {"The answer is 3 because 1+2 = 3", "3", 1},
    {"The final answer is \\boxed{50\\%}.", "0.5", 1},
    {"\\boxed{5} and the unfinished \\boxed{6", "5", 1},
    {"The answer is \\(\\frac{7}{2}\\)", "3.5", 1},
    {"The answer is \\[ 2\\sqrt{2} \\]", "\\sqrt8", 1},
};

static void test_math_responses(void **state)
{
    (void)state;
    cel_verifier *v = tv_make(NULL);
    int fails = tv_run_table(v, CEL_TASK_MATH, "responses", responses, NROWS(responses), NULL);
    cel_verifier_free(v);
    assert_int_equal(fails, 0);
}

static void test_math_extraction_report(void **state)
{
    (void)state;
    cel_verifier *v = tv_make(NULL);
    cel_verify_result r = tv_grade(v, CEL_TASK_MATH, "so \\boxed{\\frac{1}{2}} done", "0.5", NULL, 0);
    assert_true(r.correct);
    assert_string_equal(r.extracted, "\\frac{1}{2}");
    assert_int_equal(r.source, CEL_EXTRACT_BOXED);
    assert_int_equal(r.extracted_offset, 10);
    assert_string_equal(r.reason, "correct");
    assert_true(r.reward == 1.0);
    r = tv_grade(v, CEL_TASK_MATH, "The answer is 12.", "12", NULL, 0);
    assert_int_equal(r.source, CEL_EXTRACT_ANSWER_PHRASE);
    assert_string_equal(r.extracted, "12");
    r = tv_grade(v, CEL_TASK_MATH, "we got 4 then 11", "11", NULL, 0);
    assert_int_equal(r.source, CEL_EXTRACT_LAST_NUMBER);
    assert_true(r.correct);
    r = tv_grade(v, CEL_TASK_MATH, "no digits here", "11", NULL, 0);
    assert_false(r.correct);
    assert_string_equal(r.reason, "no_answer");
    assert_false(r.has_extracted);
    /* the fallback can be turned off */
    cel_verify_config cfg;
    cel_verify_config_default(&cfg);
    cfg.last_number_fallback = false;
    cel_verifier *v2 = tv_make(&cfg);
    r = tv_grade(v2, CEL_TASK_MATH, "we got 4 then 11", "11", NULL, 0);
    assert_false(r.correct);
    assert_string_equal(r.reason, "no_answer");
    cel_verifier_free(v2);
    cel_verifier_free(v);
}

static void test_math_tolerance(void **state)
{
    (void)state;
    cel_verify_config cfg;
    cel_verify_config_default(&cfg);
    cel_verifier *strict = tv_make(&cfg);
    cfg.rel_tol = 1e-2;
    cel_verifier *loose = tv_make(&cfg);
    assert_false(tv_grade(strict, CEL_TASK_MATH, "\\boxed{3.14}", "\\pi", NULL, 0).correct);
    assert_true(tv_grade(loose, CEL_TASK_MATH, "\\boxed{3.14}", "\\pi", NULL, 0).correct);
    assert_false(tv_grade(loose, CEL_TASK_MATH, "\\boxed{3.0}", "\\pi", NULL, 0).correct);
    /* integers stay exact even under a loose tolerance */
    assert_false(tv_grade(loose, CEL_TASK_MATH, "\\boxed{101}", "100", NULL, 0).correct);
    cel_verifier_free(strict);
    cel_verifier_free(loose);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_math_tables),
        cmocka_unit_test(test_math_responses),
        cmocka_unit_test(test_math_extraction_report),
        cmocka_unit_test(test_math_tolerance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
