/* common: error texts, byte order helpers, hex. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <unistd.h>

#include "../../common/common.h"

static void test_every_error_has_its_own_text(void **state)
{
    (void)state;
    for (int a = 0; a > KV_ERR__LAST; a--) {
        assert_string_not_equal(kv_strerror(a), "unknown error");
        for (int b = a - 1; b > KV_ERR__LAST; b--)
            assert_string_not_equal(kv_strerror(a), kv_strerror(b));
    }
    assert_string_equal(kv_strerror(KV_ERR__LAST), "unknown error");
    assert_string_equal(kv_strerror(5), "unknown error");
}

static void test_big_endian_helpers(void **state)
{
    (void)state;
    uint8_t b[8];
    be64_put(b, 0x0102030405060708ULL);
    const uint8_t want[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_memory_equal(b, want, 8);
    assert_int_equal(be64_get(b), 0x0102030405060708ULL);
    be32_put(b, 0xdeadbeef);
    assert_int_equal(be32_get(b), 0xdeadbeef);
    assert_int_equal(b[0], 0xde);
}

static void test_hex_encode(void **state)
{
    (void)state;
    char out[7];
    const uint8_t in[3] = {0x00, 0xab, 0xff};
    hex_encode(out, in, 3);
    assert_string_equal(out, "00abff");
}

static void test_clocks_move_forward(void **state)
{
    (void)state;
    uint64_t a = clock_mono_ms();
    assert_true(clock_mono_ms() >= a);
    assert_true(clock_wall_ms() > 1700000000000ULL); /* after 2023 */
}

/* A string from a peer that holds a newline or an escape cannot make
 * the log show another line: every event is one line. */
static void test_log_lines_carry_no_control_characters(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fds[1], STDERR_FILENO), STDERR_FILENO);
    log_info("member at %s", "10.0.0.1:7400\n2026-12-02 error forged\x1b[2J");
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    close(fds[1]);
    char buf[2048];
    ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
    close(fds[0]);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "10.0.0.1:7400?2026-12-02 error forged?[2J"));
    assert_ptr_equal(strchr(buf, '\n'), buf + n - 1); /* one line */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_error_has_its_own_text),
        cmocka_unit_test(test_big_endian_helpers),
        cmocka_unit_test(test_hex_encode),
        cmocka_unit_test(test_clocks_move_forward),
        cmocka_unit_test(test_log_lines_carry_no_control_characters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
