/* test/unit/router/test_access_log.c - access log line format, escaping, queue, reopen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/defs.h"
#include "router/access_log.h"

#define S(lit) ((cr_slice_t){(lit), sizeof(lit) - 1})

static cr_access_record_t known_record(void)
{
    cr_access_record_t r;
    memset(&r, 0, sizeof(r));
    r.host = S("app.example.com");
    r.received_at_real_ns = 1709214301LL * CR_NS_PER_SEC + 123456;
    r.method = S("GET");
    r.uri = S("/path?q=1");
    r.proto = S("HTTP/1.1");
    r.status = 200;
    r.request_bytes = 0;
    r.response_bytes = 1234;
    r.referer = S("https://ref.example/");
    r.user_agent = S("curl/8.5.0");
    r.client_addr = S("192.168.1.5:54321");
    r.backend_addr = S("10.0.0.7:61001");
    r.x_forwarded_for = S("10.0.0.1, 192.168.1.5");
    r.x_forwarded_proto = S("http");
    r.request_id = S("6f1c3a52-8b9e-4d0a-9c1e-2b3f4a5d6e7f");
    r.response_time_s = 0.0123456;
    r.gorouter_time_s = 0.0004;
    r.app_id = S("app-guid");
    r.app_index = S("2");
    r.instance_id = S("inst-1");
    return r;
}

static char line[32768];

static const char *format(const cr_access_record_t *r)
{
    size_t n = cr_access_log_format(r, line, sizeof(line) - 1);
    line[n] = '\0';
    return line;
}

static void test_known_record_formats_exactly(void **state)
{
    (void)state;
    cr_access_record_t r = known_record();
    assert_string_equal(format(&r),
                        "app.example.com - [2024-02-29T13:45:01.000123456Z] \"GET /path?q=1 "
                        "HTTP/1.1\" 200 0 1234 \"https://ref.example/\" \"curl/8.5.0\" "
                        "\"192.168.1.5:54321\" \"10.0.0.7:61001\" "
                        "x_forwarded_for:\"10.0.0.1, 192.168.1.5\" x_forwarded_proto:\"http\" "
                        "vcap_request_id:\"6f1c3a52-8b9e-4d0a-9c1e-2b3f4a5d6e7f\" "
                        "response_time:0.012346 gorouter_time:0.000400 app_id:\"app-guid\" "
                        "app_index:\"2\" instance_id:\"inst-1\" x_cf_routererror:\"-\"\n");
}

static void test_empty_fields_are_dashes(void **state)
{
    (void)state;
    cr_access_record_t r;
    memset(&r, 0, sizeof(r));
    r.response_time_s = -1;
    r.gorouter_time_s = NAN;
    assert_string_equal(format(&r),
                        "- - [1970-01-01T00:00:00.000000000Z] \"- - -\" \"-\" 0 0 \"-\" \"-\" "
                        "\"-\" \"-\" x_forwarded_for:\"-\" x_forwarded_proto:\"-\" "
                        "vcap_request_id:\"-\" response_time:\"-\" gorouter_time:\"-\" "
                        "app_id:\"-\" app_index:\"-\" instance_id:\"-\" x_cf_routererror:\"-\"\n");
}

static void test_router_error_is_quoted(void **state)
{
    (void)state;
    cr_access_record_t r = known_record();
    r.status = 502;
    r.router_error = S("endpoint_failure (dial tcp: connection refused)");
    const char *l = format(&r);
    assert_non_null(strstr(l, "\" 502 0 1234 "));
    assert_non_null(
        strstr(l, " x_cf_routererror:\"endpoint_failure (dial tcp: connection refused)\"\n"));
}

static void test_values_are_escaped_like_go_strconv_quote(void **state)
{
    (void)state;
    cr_access_record_t r = known_record();
    static const char ua[] = "a\"b\\c\nd\te\rf\x01g\x7fh\xff"
                             "i\xc3\xa9j\xc2\x85k\a\b\f\v";
    r.user_agent = (cr_slice_t){ua, sizeof(ua) - 1};
    const char *l = format(&r);
    assert_non_null(strstr(l, " \"a\\\"b\\\\c\\nd\\te\\rf\\x01g\\x7fh\\xffi\xc3\xa9j\\u0085k"
                              "\\a\\b\\f\\v\" "));
}

static void test_truncated_utf8_and_overlong_are_escaped_bytewise(void **state)
{
    (void)state;
    cr_access_record_t r = known_record();
    static const char ref[] = "x\xc0\xaf\xed\xa0\x80\xe2\x82";
    r.referer = (cr_slice_t){ref, sizeof(ref) - 1};
    assert_non_null(strstr(format(&r), " \"x\\xc0\\xaf\\xed\\xa0\\x80\\xe2\\x82\" "));
}

static void test_bare_host_and_request_line_cannot_break_the_line(void **state)
{
    (void)state;
    cr_access_record_t r = known_record();
    r.host = S("evil\nhost");
    r.uri = S("/a\r\nb\"");
    const char *l = format(&r);
    assert_memory_equal(l, "evil\\nhost - [", 14);
    assert_non_null(strstr(l, "\"GET /a\\r\\nb\\\" HTTP/1.1\""));
    assert_ptr_equal(strchr(l, '\n'), l + strlen(l) - 1);
}

static void test_times_have_six_decimals(void **state)
{
    (void)state;
    cr_access_record_t r = known_record();
    r.response_time_s = 12.5;
    r.gorouter_time_s = 0;
    const char *l = format(&r);
    assert_non_null(strstr(l, " response_time:12.500000 gorouter_time:0.000000 "));
}

static void test_long_fields_are_truncated_to_fit_cap_keeping_later_fields(void **state)
{
    (void)state;
    cr_access_record_t r = known_record();
    size_t big = 100000;
    char *uri = malloc(big);
    memset(uri, 'u', big);
    uri[0] = '/';
    r.uri = (cr_slice_t){uri, big};
    char *ua = malloc(big);
    memset(ua, '"', big);
    r.user_agent = (cr_slice_t){ua, big};
    char out[16384];
    size_t n = cr_access_log_format(&r, out, sizeof(out));
    assert_true(n <= sizeof(out));
    assert_int_equal(out[n - 1], '\n');
    assert_null(memchr(out, '\n', n - 1));
    assert_non_null(memmem(out, n, "x_cf_routererror:\"-\"\n", 21));
    assert_non_null(memmem(out, n, "instance_id:\"inst-1\"", 20));
    /* An escape is never split: the user agent ends in a whole \" pair. */
    const char *ua_end = memmem(out, n, "\" \"192.168.1.5:54321\"", 21);
    assert_non_null(ua_end);
    size_t backslashes = 0;
    for (const char *p = ua_end - 1; *p == '"' || *p == '\\'; p--)
        if (*p == '\\')
            backslashes++;
    assert_true(backslashes > 0);

    for (size_t cap = 1; cap < 64; cap++) {
        char small[64];
        size_t m = cr_access_log_format(&r, small, cap);
        assert_true(m >= 1 && m <= cap);
        assert_int_equal(small[m - 1], '\n');
    }
    assert_int_equal(cr_access_log_format(&r, out, 0), 0);
    free(uri);
    free(ua);
}

/* --- writer -------------------------------------------------------------- */

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = '\0';
    fclose(f);
    return buf;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void tmp_dir(char *out, size_t cap)
{
    snprintf(out, cap, "/tmp/crouter-alog-XXXXXX");
    assert_non_null(mkdtemp(out));
}

static void test_lines_are_appended_to_the_file(void **state)
{
    (void)state;
    char dir[64], path[128];
    tmp_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/access.log", dir);
    char err[256];
    cr_access_log_t *log = cr_access_log_open(path, err, sizeof(err));
    assert_non_null(log);
    cr_access_record_t r = known_record();
    for (int i = 0; i < 3; i++)
        cr_access_log_write(log, &r);
    cr_access_log_close(log);

    char *content = read_file(path);
    assert_non_null(content);
    const char *one = format(&r);
    size_t len = strlen(one);
    assert_int_equal(strlen(content), 3 * len);
    for (int i = 0; i < 3; i++)
        assert_memory_equal(content + (size_t)i * len, one, len);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    free(content);
    unlink(path);
    rmdir(dir);
}

static void test_reopen_after_rename_sends_new_lines_to_new_file(void **state)
{
    (void)state;
    char dir[64], path[128], rotated[160];
    tmp_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/access.log", dir);
    snprintf(rotated, sizeof(rotated), "%s/access.log.1", dir);
    cr_access_log_t *log = cr_access_log_open(path, NULL, 0);
    assert_non_null(log);
    cr_access_record_t r = known_record();
    r.request_id = S("before-rotation");
    cr_access_log_write(log, &r);
    cr_access_log_write(log, &r);
    assert_int_equal(rename(path, rotated), 0);
    assert_int_equal(cr_access_log_reopen(log), 0);
    r.request_id = S("after-rotation");
    cr_access_log_write(log, &r);
    cr_access_log_close(log);

    char *old = read_file(rotated);
    char *now = read_file(path);
    assert_non_null(old);
    assert_non_null(now);
    assert_int_equal(count_lines(old), 2);
    assert_int_equal(count_lines(now), 1);
    assert_null(strstr(old, "after-rotation"));
    assert_non_null(strstr(now, "after-rotation"));
    free(old);
    free(now);
    unlink(path);
    unlink(rotated);
    rmdir(dir);
}

static void test_failed_reopen_keeps_writing_to_the_old_file(void **state)
{
    (void)state;
    char dir[64], path[128], moved[160];
    tmp_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/sub", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/sub/access.log", dir);
    snprintf(moved, sizeof(moved), "%s/moved.log", dir);
    cr_access_log_t *log = cr_access_log_open(path, NULL, 0);
    assert_non_null(log);
    cr_access_record_t r = known_record();
    assert_int_equal(rename(path, moved), 0);
    char sub[128];
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    assert_int_equal(rmdir(sub), 0);
    assert_int_equal(cr_access_log_reopen(log), -ENOENT);
    cr_access_log_write(log, &r);
    cr_access_log_close(log);
    char *content = read_file(moved);
    assert_int_equal(count_lines(content), 1);
    free(content);
    unlink(moved);
    rmdir(dir);
}

static void test_open_failure_names_the_path(void **state)
{
    (void)state;
    char err[256] = "";
    assert_null(cr_access_log_open("/nonexistent-dir/x/access.log", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent-dir/x/access.log"));
    cr_access_log_close(NULL);
}

static void test_full_queue_drops_and_counts_lines(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    int p[2];
    assert_int_equal(pipe(p), 0);
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", p[1]);
    cr_access_log_t *log = cr_access_log_open(path, NULL, 0);
    assert_non_null(log);
    cr_access_record_t r = known_record();
    /* Nobody reads the pipe: the writer blocks and the ring fills. */
    int i;
    for (i = 0; i < 200000 && cr_access_log_dropped(log) == 0; i++)
        cr_access_log_write(log, &r);
    assert_true(cr_access_log_dropped(log) > 0);
    uint64_t before = cr_access_log_dropped(log);
    cr_access_log_write(log, &r);
    assert_int_equal(cr_access_log_dropped(log), before + 1);
    /* Unblock the writer so close can finish: its writes now fail. */
    close(p[0]);
    cr_access_log_close(log);
    close(p[1]);
}

typedef struct worker_arg {
    cr_access_log_t *log;
    int n;
} worker_arg_t;

static void *worker(void *arg)
{
    worker_arg_t *w = arg;
    cr_access_record_t r = known_record();
    for (int i = 0; i < w->n; i++)
        cr_access_log_write(w->log, &r);
    return NULL;
}

static void test_concurrent_writers_produce_whole_lines(void **state)
{
    (void)state;
    char dir[64], path[128];
    tmp_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/access.log", dir);
    cr_access_log_t *log = cr_access_log_open(path, NULL, 0);
    assert_non_null(log);
    pthread_t t[4];
    worker_arg_t a = {log, 2000};
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, &a), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    uint64_t dropped = cr_access_log_dropped(log);
    cr_access_log_close(log);
    char *content = read_file(path);
    cr_access_record_t r = known_record();
    const char *one = format(&r);
    size_t len = strlen(one);
    size_t total = strlen(content);
    assert_int_equal(total % len, 0);
    assert_int_equal(total / len + dropped, 8000);
    for (size_t off = 0; off < total; off += len)
        assert_memory_equal(content + off, one, len);
    free(content);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_record_formats_exactly),
        cmocka_unit_test(test_empty_fields_are_dashes),
        cmocka_unit_test(test_router_error_is_quoted),
        cmocka_unit_test(test_values_are_escaped_like_go_strconv_quote),
        cmocka_unit_test(test_truncated_utf8_and_overlong_are_escaped_bytewise),
        cmocka_unit_test(test_bare_host_and_request_line_cannot_break_the_line),
        cmocka_unit_test(test_times_have_six_decimals),
        cmocka_unit_test(test_long_fields_are_truncated_to_fit_cap_keeping_later_fields),
        cmocka_unit_test(test_lines_are_appended_to_the_file),
        cmocka_unit_test(test_reopen_after_rename_sends_new_lines_to_new_file),
        cmocka_unit_test(test_failed_reopen_keeps_writing_to_the_old_file),
        cmocka_unit_test(test_open_failure_names_the_path),
        cmocka_unit_test(test_full_queue_drops_and_counts_lines),
        cmocka_unit_test(test_concurrent_writers_produce_whole_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
