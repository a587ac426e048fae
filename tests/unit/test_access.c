/* access: the access file's lines, what a bad one gets, and which role each
 * request needs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../common/common.h"
#include "../../node/access.h"

static char path[64];

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof(path), "/tmp/essaim-access-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return unlink(path);
}

static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A public key of fill bytes, in base64. */
static void key_b64(char out[64], uint8_t fill)
{
    uint8_t k[CRYPTO_KEY_BYTES];
    memset(k, fill, sizeof(k));
    sodium_bin2base64(out, 64, k, sizeof(k), sodium_base64_VARIANT_ORIGINAL);
}

static void test_a_good_file_lists_each_client_with_its_role(void **state)
{
    (void)state;
    char a[64], b[64], c[64], text[512];
    key_b64(a, 1);
    key_b64(b, 2);
    key_b64(c, 3);
    snprintf(text, sizeof(text),
             "# clients of the shop\n\n%s  alice read\n%s\tbob write  # ops\n"
             "%s carol admin\r\n",
             a, b, c);
    write_file(text);
    struct access_list l;
    char err[256] = "";
    assert_int_equal(access_load(path, &l, err, sizeof(err)), 0);
    assert_int_equal(l.n, 3);
    uint8_t k[CRYPTO_KEY_BYTES];
    memset(k, 2, sizeof(k));
    const struct access_entry *e = access_find(&l, k);
    assert_non_null(e);
    assert_string_equal(e->name, "bob");
    assert_int_equal(e->role, ROLE_WRITE);
    memset(k, 9, sizeof(k));
    assert_null(access_find(&l, k));
    assert_string_equal(access_role_name(l.e[2].role), "admin");
    access_free(&l);
}

static void expect_refused(const char *text, const char *line_no,
                           const char *why)
{
    write_file(text);
    struct access_list l = {0};
    char err[256] = "";
    assert_int_equal(access_load(path, &l, err, sizeof(err)), KV_ERR_INVAL);
    assert_non_null(strstr(err, line_no));
    assert_non_null(strstr(err, why));
    assert_int_equal(l.n, 0);
}

static void test_a_bad_line_fails_the_file_and_is_named(void **state)
{
    (void)state;
    char a[64], text[512];
    key_b64(a, 1);
    snprintf(text, sizeof(text), "%s alice read\nnot-a-key bob read\n", a);
    expect_refused(text, "line 2", "not a public key");
    snprintf(text, sizeof(text), "# x\n%s alice root\n", a);
    expect_refused(text, "line 2", "unknown role");
    snprintf(text, sizeof(text), "%s alice read\n%s alice2 admin\n", a, a);
    expect_refused(text, "line 2", "already listed");
    snprintf(text, sizeof(text), "%s alice\n", a);
    expect_refused(text, "line 1", "KEY NAME ROLE");
    snprintf(text, sizeof(text), "%s alice read extra\n", a);
    expect_refused(text, "line 1", "KEY NAME ROLE");
    struct access_list l;
    char err[256];
    assert_int_equal(access_load("/nonexistent/access", &l, err, sizeof(err)),
                     KV_ERR_IO);
    assert_non_null(strstr(err, "/nonexistent/access"));
}

static void test_each_request_needs_its_role(void **state)
{
    (void)state;
    assert_int_equal(access_role_needed(MSG_GET), ROLE_READ);
    assert_int_equal(access_role_needed(MSG_STATUS), ROLE_READ);
    assert_int_equal(access_role_needed(MSG_WHERE), ROLE_READ);
    assert_int_equal(access_role_needed(MSG_PUT), ROLE_WRITE);
    assert_int_equal(access_role_needed(MSG_DEL), ROLE_WRITE);
    assert_int_equal(access_role_needed(MSG_REPAIR), ROLE_ADMIN);
    assert_int_equal(access_role_needed(MSG_FAULT), ROLE_ADMIN);
    assert_int_equal(access_role_needed(MSG_TOPO), ROLE_ADMIN);
    assert_int_equal(access_role_needed(200), ROLE_ADMIN);
}

/* The list as nodes exchange it: rendered, parsed back the same; a client
 * added or given a new role, removed by key or by name. */
static void test_the_list_renders_parses_and_changes(void **state)
{
    (void)state;
    struct access_list l = {0};
    struct access_entry e;
    char a[64], b[64], line[160], why[160];
    key_b64(a, 1);
    key_b64(b, 2);
    snprintf(line, sizeof(line), "%s alice read", a);
    assert_int_equal(access_parse_entry(line, &e, why, sizeof(why)), 0);
    assert_int_equal(access_set(&l, &e), 0);
    snprintf(line, sizeof(line), "%s bob write", b);
    assert_int_equal(access_parse_entry(line, &e, why, sizeof(why)), 0);
    assert_int_equal(access_set(&l, &e), 0);
    snprintf(line, sizeof(line), "%s alice admin", a); /* a new role */
    assert_int_equal(access_parse_entry(line, &e, why, sizeof(why)), 0);
    assert_int_equal(access_set(&l, &e), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.e[0].role, ROLE_ADMIN);
    assert_int_equal(access_parse_entry("nonsense", &e, why, sizeof(why)),
                     KV_ERR_INVAL);
    size_t len;
    char *text = access_render(&l, &len);
    assert_non_null(text);
    struct access_list back;
    char err[256];
    assert_int_equal(access_parse(text, len, "text", &back, err, sizeof(err)),
                     0);
    assert_int_equal(back.n, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_memory_equal(back.e[i].key, l.e[i].key, sizeof(l.e[i].key));
        assert_string_equal(back.e[i].name, l.e[i].name);
        assert_int_equal(back.e[i].role, l.e[i].role);
    }
    free(text);
    access_free(&back);
    assert_int_equal(access_remove(&l, "bob"), 1);
    assert_int_equal(access_remove(&l, "bob"), 0);
    assert_int_equal(access_remove(&l, a), 1); /* by key */
    assert_int_equal(l.n, 0);
    assert_int_equal(access_parse("", 0, "empty", &back, err, sizeof(err)), 0);
    assert_int_equal(back.n, 0);
    access_free(&l);
}

int main(void)
{
    assert_true(sodium_init() >= 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_a_good_file_lists_each_client_with_its_role, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_bad_line_fails_the_file_and_is_named, setup, teardown),
        cmocka_unit_test(test_each_request_needs_its_role),
        cmocka_unit_test(test_the_list_renders_parses_and_changes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
