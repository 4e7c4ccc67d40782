/* Unit tests for prompt templates: parsing, validation errors with file:line,
 * rendering, template sets and the shipped templates/ folder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "celine/generate.h"

static cel_template *parse_ok(const char *src)
{
    cel_template *t = NULL;
    cel_error e;
    cel_error_clear(&e);
    cel_status st = cel_template_parse("t.tmpl", src, strlen(src), &t, &e);
    if (st) fprintf(stderr, "unexpected error: %s\n", e.msg);
    assert_int_equal(st, CEL_OK);
    assert_non_null(t);
    return t;
}

/* Parses src expecting failure; checks the message contains `want`. */
static void parse_bad(const char *src, const char *want)
{
    cel_template *t = NULL;
    cel_error e;
    cel_error_clear(&e);
    cel_status st = cel_template_parse("dir/bad.tmpl", src, strlen(src), &t, &e);
    if (st == CEL_OK || !strstr(e.msg, want))
        fprintf(stderr, "source:\n%s\nexpected error containing '%s', got (%d) '%s'\n", src, want, st, e.msg);
    assert_int_not_equal(st, CEL_OK);
    assert_null(t);
    assert_non_null(strstr(e.msg, want));
}

static const char *mind_src = "# a comment\n"
                              "@kind mind\n"
                              "@description test style\n"
                              "@speakers Teacher | Student\n"
                              "\n"
                              "@system\n"
                              "You write dialogues between {{speaker1}} and {{speaker2}}.\n"
                              "@user\n"
                              "\n"
                              "Context:\n"
                              "{{text}}\n"
                              "Style: {{style}}. Literal: \\{{not_a_var}}\n"
                              "\n";

static void test_parse_and_render(void **state)
{
    (void)state;
    cel_template *t = parse_ok(mind_src);
    assert_string_equal(t->name, "t");
    assert_int_equal(t->kind, CEL_TMPL_MIND);
    assert_string_equal(t->speakers[0], "Teacher");
    assert_string_equal(t->speakers[1], "Student");
    assert_string_equal(t->description, "test style");
    assert_string_equal(t->system_src, "You write dialogues between {{speaker1}} and {{speaker2}}.");
    /* leading/trailing blank lines of a section are trimmed */
    assert_string_equal(t->user_src, "Context:\n{{text}}\nStyle: {{style}}. Literal: \\{{not_a_var}}");
    cel_buf sys, usr;
    cel_buf_init(&sys);
    cel_buf_init(&usr);
    /* a value holding a placeholder is inserted verbatim, never expanded */
    const char *doc = "x = {{style}} and $\\frac{1}{2}$";
    cel_tmpl_var vars[] = {{"text", doc, strlen(doc)},
                           {"speaker1", "Teacher", 7},
                           {"speaker2", "Student", 7},
                           {"style", "teacher_student", 15}};
    cel_error e;
    assert_int_equal(cel_template_render(t, vars, 4, &sys, &usr, &e), CEL_OK);
    assert_string_equal(sys.data, "You write dialogues between Teacher and Student.");
    assert_string_equal(usr.data,
                        "Context:\nx = {{style}} and $\\frac{1}{2}$\nStyle: teacher_student. Literal: {{not_a_var}}");
    /* a missing value is an error at render time */
    cel_buf_reset(&usr);
    assert_int_equal(cel_template_render(t, vars, 1, NULL, &usr, &e), CEL_ERR_INVALID);
    assert_non_null(strstr(e.msg, "{{speaker1}}") ? strstr(e.msg, "{{speaker1}}") : strstr(e.msg, "{{style}}"));
    cel_buf_free(&sys);
    cel_buf_free(&usr);
    cel_template_free(t);
}

static void test_errors_name_file_and_line(void **state)
{
    (void)state;
    /* unknown placeholder: line of its use */
    parse_bad("@kind mind\n@speakers A | B\n@user\nline one\n{{text}} and {{colour}}\n", "dir/bad.tmpl:5: unknown placeholder {{colour}}");
    /* missing required placeholder: line of the @user section */
    parse_bad("@kind rephrase\n\n@user\nno placeholder here\n", "dir/bad.tmpl:3: missing placeholder {{text}}");
    parse_bad("@kind rl\n@task mcq\n@user\n{{question}}\n", "dir/bad.tmpl:3: missing placeholder {{options}}");
    /* open RL templates have no options */
    parse_bad("@kind rl\n@task open\n@user\n{{question}}\n{{options}}\n", "dir/bad.tmpl:5: unknown placeholder {{options}}");
    /* malformed placeholders */
    parse_bad("@kind qa\n@task open\n@user\n{{text}}\n{{ n }}\n", "dir/bad.tmpl:5: malformed placeholder");
    parse_bad("@kind qa\n@task open\n@user\n{{text}}\n{{n\n", "dir/bad.tmpl:5: malformed placeholder");
    parse_bad("@kind qa\n@task open\n@user\n{{text}} {{Text}}\n", "dir/bad.tmpl:4: malformed placeholder");
    /* header problems */
    parse_bad("@kind mind\n@speakers A | B\n@colour red\n@user\n{{text}}\n", "dir/bad.tmpl:3: unknown directive @colour");
    parse_bad("@kind mind\n@kind mind\n@user\n{{text}}\n", "dir/bad.tmpl:2: @kind given twice");
    parse_bad("@kind poem\n@user\n{{text}}\n", "dir/bad.tmpl:1: unknown @kind 'poem'");
    parse_bad("@speakers A | B\n@user\n{{text}}\n", "dir/bad.tmpl:1: missing @kind");
    parse_bad("@kind mind\n@speakers A | B\n", "missing @user section");
    parse_bad("@kind mind\n@speakers A | B\n@user\n\n\n", "dir/bad.tmpl:3: empty @user section");
    parse_bad("@kind mind\n@user\n{{text}}\n", "mind templates need @speakers");
    parse_bad("@kind mind\n@speakers A B\n@user\n{{text}}\n", "dir/bad.tmpl:2: @speakers must be two labels");
    parse_bad("@kind mind\n@speakers A | A\n@user\n{{text}}\n", "dir/bad.tmpl:2: @speakers names the same label twice");
    parse_bad("@kind rephrase\n@speakers A | B\n@user\n{{text}}\n", "dir/bad.tmpl:2: @speakers applies to mind");
    parse_bad("@kind mind\n@speakers A | B\n@lead_in Here:\n@user\n{{text}}\n", "dir/bad.tmpl:3: @quality, @input_tokens");
    parse_bad("@kind qa\n@user\n{{text}}\n", "qa templates need @task");
    parse_bad("@kind rephrase\n@task mcq\n@user\n{{text}}\n", "dir/bad.tmpl:2: @task applies to qa and rl");
    parse_bad("@kind rephrase\n@output_tokens 100\n@keep_tokens 50..120\n@user\n{{text}}\n",
              "dir/bad.tmpl:3: @keep_tokens maximum exceeds @output_tokens");
    parse_bad("@kind rephrase\n@keep_tokens 60..50\n@user\n{{text}}\n", "dir/bad.tmpl:2: @keep_tokens expects MIN..MAX");
    parse_bad("@kind rephrase\n@input_tokens -5\n@user\n{{text}}\n", "dir/bad.tmpl:2: @input_tokens expects an integer");
    parse_bad("@kind rephrase\n@post summary\n@user\n{{text}}\n", "dir/bad.tmpl:2: unknown @post 'summary'");
    parse_bad("@kind rephrase\nstray text\n@user\n{{text}}\n", "dir/bad.tmpl:2: expected a directive");
    parse_bad("@kind rephrase\n@user\n{{text}}\n@user\nagain\n", "dir/bad.tmpl:4: section @user given twice");
    parse_bad("@kind rephrase\n@name\n@user\n{{text}}\n", "dir/bad.tmpl:2: @name needs a value");
    parse_bad("@kind rephrase\n@name Bad Name\n@user\n{{text}}\n", "dir/bad.tmpl:2: @name must use");
    parse_bad("@kind mind\n@speakers A | B\n@user\n{{speaker3}} {{text}}\n", "dir/bad.tmpl:4: unknown placeholder {{speaker3}}");
    /* invalid UTF-8 and NUL bytes */
    parse_bad("@kind rephrase\n@user\n\xff{{text}}\n", "not valid UTF-8");
}

static void test_rephrase_directives(void **state)
{
    (void)state;
    cel_template *t = parse_ok("@kind rephrase\n@name wiki\n@quality low\n@input_tokens 512\n@output_tokens 512\n"
                               "@keep_tokens 50..510\n@lead_in Here is a paraphrased text:\n@post none\n@user\n{{text}}\n");
    assert_string_equal(t->name, "wiki");
    assert_string_equal(t->quality, "low");
    assert_int_equal(t->max_input_tokens, 512);
    assert_int_equal(t->max_output_tokens, 512);
    assert_int_equal(t->keep_min_tokens, 50);
    assert_int_equal(t->keep_max_tokens, 510);
    assert_string_equal(t->lead_in, "Here is a paraphrased text:");
    assert_int_equal(t->post, CEL_POST_NONE);
    assert_null(t->system_src);
    cel_template_free(t);
    /* defaults: budgets 512/512, keep 50..output-2 */
    t = parse_ok("@kind rephrase\n@output_tokens 600\n@post diverse_qa\n@user\n{{text}}\n");
    assert_int_equal(t->max_input_tokens, 512);
    assert_int_equal(t->keep_min_tokens, 50);
    assert_int_equal(t->keep_max_tokens, 598);
    assert_int_equal(t->post, CEL_POST_DIVERSE_QA);
    cel_template_free(t);
    /* mind/qa templates may set @output_tokens; unset means the pipeline's max_tokens */
    t = parse_ok("@kind qa\n@task mcq\n@output_tokens 900\n@user\n{{text}} {{n}}\n");
    assert_int_equal(t->max_output_tokens, 900);
    assert_int_equal(t->task, CEL_TASK_MCQ);
    cel_template_free(t);
    t = parse_ok("@kind qa\n@task open\n@user\n{{text}}\n");
    assert_int_equal(t->max_output_tokens, 0);
    cel_template_free(t);
    /* CRLF line ends: no carriage return reaches the prompt */
    t = parse_ok("@kind rephrase\r\n@lead_in Here:\r\n@user\r\nLine one\r\n{{text}}\r\n");
    assert_string_equal(t->user_src, "Line one\n{{text}}");
    assert_string_equal(t->lead_in, "Here:");
    cel_template_free(t);
}

static void write_file(const char *path, const char *s)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
}

static void test_sets(void **state)
{
    (void)state;
    char dir[] = "/tmp/celine_tmplXXXXXX";
    assert_non_null(mkdtemp(dir));
    char p1[300], p2[300], sub[200], p3[300], p4[300];
    snprintf(p1, sizeof p1, "%s/alpha.tmpl", dir);
    snprintf(p2, sizeof p2, "%s/ignored.txt", dir);
    snprintf(sub, sizeof sub, "%s/nested", dir);
    mkdir(sub, 0700);
    snprintf(p3, sizeof p3, "%s/beta.tmpl", sub);
    write_file(p1, "@kind mind\n@speakers A | B\n@user\nv1 {{text}}\n");
    write_file(p2, "not a template");
    write_file(p3, "@kind rephrase\n@user\n{{text}}\n");
    cel_template_set *s;
    cel_error e;
    assert_int_equal(cel_template_set_create(&s, &e), CEL_OK);
    assert_int_equal(cel_template_set_load_dir(s, dir, &e), CEL_OK);
    assert_int_equal(cel_template_set_count(s), 2);
    assert_string_equal(cel_template_set_at(s, 0)->name, "alpha");
    assert_string_equal(cel_template_set_at(s, 1)->name, "beta");
    assert_null(cel_template_set_find(s, "gamma"));
    /* a later file of the same name overrides (a user folder over the built-ins) */
    cel_template *t = NULL;
    assert_int_equal(cel_template_parse("x/alpha.tmpl", "@kind mind\n@speakers A | B\n@user\nv2 {{text}}\n", 44, &t, &e),
                     CEL_OK);
    assert_int_equal(cel_template_set_add(s, t, &e), CEL_OK);
    assert_int_equal(cel_template_set_count(s), 2);
    assert_string_equal(cel_template_set_find(s, "alpha")->user_src, "v2 {{text}}");
    /* two files of one name inside one folder: error naming both */
    snprintf(p4, sizeof p4, "%s/dup.tmpl", sub);
    write_file(p4, "@name alpha\n@kind rephrase\n@user\n{{text}}\n");
    assert_int_equal(cel_template_set_load_dir(s, dir, &e), CEL_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "alpha"));
    assert_non_null(strstr(e.msg, "already used by"));
    /* a broken file fails the whole load with its path and line */
    write_file(p4, "@kind rephrase\n@user\n{{txt}}\n");
    assert_int_equal(cel_template_set_load_dir(s, dir, &e), CEL_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "dup.tmpl:3: unknown placeholder {{txt}}"));
    assert_int_equal(cel_template_set_load_dir(s, "/nonexistent/celine", &e), CEL_ERR_IO);
    cel_template_set_free(s);
    unlink(p1);
    unlink(p2);
    unlink(p3);
    unlink(p4);
    rmdir(sub);
    rmdir(dir);
}

/* The shipped templates: every file loads, and the sets the papers define are complete. */
static void test_shipped_templates(void **state)
{
    (void)state;
    cel_template_set *s;
    cel_error e;
    assert_int_equal(cel_template_set_create(&s, &e), CEL_OK);
    cel_status st = cel_template_set_load_dir(s, CELINE_SOURCE_DIR "/templates", &e);
    if (st) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(st, CEL_OK);
    const char *mind[] = {"two_students", "teacher_student", "two_professors", "debate",
                          "problem_solving", "layman_knowall", "interview"};
    for (size_t i = 0; i < 7; i++) {
        const cel_template *t = cel_template_set_find(s, mind[i]);
        assert_non_null(t);
        assert_int_equal(t->kind, CEL_TMPL_MIND);
        assert_non_null(t->speakers[0]);
        /* every MIND prompt demands faithfulness to the context */
        cel_buf all;
        cel_buf_init(&all);
        assert_int_equal(cel_buf_printf(&all, "%s\n%s", t->system_src ? t->system_src : "", t->user_src), CEL_OK);
        assert_non_null(strstr(all.data, "faithful"));
        cel_buf_free(&all);
    }
    struct {
        const char *name, *quality;
        int in, out, kmin, kmax;
        bool lead;
        cel_tmpl_post post;
    } cc[] = {
        {"wikipedia", "low", 512, 512, 50, 510, true, CEL_POST_NONE},
        {"diverse_qa", "high", 1000, 600, 100, 598, false, CEL_POST_DIVERSE_QA},
        {"distill", "high", 2000, 1600, 50, 1598, true, CEL_POST_NONE},
        {"extract_knowledge", "high", 1400, 1400, 50, 1398, false, CEL_POST_NONE},
        {"knowledge_list", "high", 1000, 600, 50, 598, false, CEL_POST_KNOWLEDGE_LIST},
    };
    for (size_t i = 0; i < 5; i++) {
        const cel_template *t = cel_template_set_find(s, cc[i].name);
        assert_non_null(t);
        assert_int_equal(t->kind, CEL_TMPL_REPHRASE);
        assert_string_equal(t->quality, cc[i].quality);
        assert_int_equal(t->max_input_tokens, cc[i].in);
        assert_int_equal(t->max_output_tokens, cc[i].out);
        assert_int_equal(t->keep_min_tokens, cc[i].kmin);
        assert_int_equal(t->keep_max_tokens, cc[i].kmax);
        assert_int_equal(t->lead_in != NULL, cc[i].lead);
        assert_int_equal(t->post, cc[i].post);
    }
    const char *qa[][2] = {{"qa_mcq", "mcq"}, {"qa_open", "open"}, {"rl_mcq", "mcq"}, {"rl_open", "open"}};
    for (size_t i = 0; i < 4; i++) {
        const cel_template *t = cel_template_set_find(s, qa[i][0]);
        assert_non_null(t);
        assert_int_equal(t->kind, i < 2 ? CEL_TMPL_QA : CEL_TMPL_RL);
        assert_int_equal(t->task, strcmp(qa[i][1], "mcq") == 0 ? CEL_TASK_MCQ : CEL_TASK_OPEN);
    }
    cel_template_set_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_render),
        cmocka_unit_test(test_errors_name_file_and_line),
        cmocka_unit_test(test_rephrase_directives),
        cmocka_unit_test(test_sets),
        cmocka_unit_test(test_shipped_templates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
