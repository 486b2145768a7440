/* test/support/ts_crouter.c - crouter and fake_backend processes. */
#include "testsupport.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static const char *env_or(const char *env, const char *dflt)
{
    const char *v = getenv(env);
    return v && *v ? v : dflt;
}

const char *ts_crouter_bin(void)
{
    return env_or("CROUTER_BIN", TS_CROUTER_BIN);
}

const char *ts_crouterctl_bin(void)
{
    return env_or("CROUTERCTL_BIN", TS_CROUTERCTL_BIN);
}

const char *ts_fake_backend_bin(void)
{
    return env_or("FAKE_BACKEND_BIN", TS_FAKE_BACKEND_BIN);
}

/* True when extra sets this top-level key ("key:" at the start of a line). */
static bool yaml_has_key(const char *extra, const char *key)
{
    if (!extra)
        return false;
    size_t kl = strlen(key);
    for (const char *p = extra; p && *p;) {
        if (strncmp(p, key, kl) == 0 && p[kl] == ':')
            return true;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return false;
}

static void put_default(FILE *f, const char *extra, const char *key, const char *value)
{
    if (!yaml_has_key(extra, key))
        fprintf(f, "%s: %s\n", key, value);
}

int ts_crouter_spawn(ts_crouter_t *cr, const ts_nats_t *nats, const char *extra_yaml)
{
    memset(cr, 0, sizeof *cr);
    cr->exit_status = -1;
    cr->port = ts_free_port();
    cr->status_port = ts_free_port();
    cr->routes_port = ts_free_port();
    snprintf(cr->user, sizeof cr->user, "router-status");
    snprintf(cr->pass, sizeof cr->pass, "s3cret-%u", cr->port);
    ts_tmp_path(cr->config_path, sizeof cr->config_path, "crouter", ".yml");
    ts_tmp_path(cr->log_path, sizeof cr->log_path, "crouter", ".log");
    ts_tmp_path(cr->access_log_path, sizeof cr->access_log_path, "access", ".log");

    FILE *f = fopen(cr->config_path, "w");
    if (!f)
        return -1;
    char buf[64];
    snprintf(buf, sizeof buf, "%u", cr->port);
    put_default(f, extra_yaml, "port", buf);
    fprintf(f, "status:\n  host: 127.0.0.1\n  port: %u\n  user: %s\n  pass: %s\n  routes:\n    port: %u\n",
            cr->status_port, cr->user, cr->pass, cr->routes_port);
    if (!yaml_has_key(extra_yaml, "nats"))
        fprintf(f, "nats:\n  hosts:\n  - hostname: 127.0.0.1\n    port: %u\n",
                nats ? nats->port : ts_free_port());
    put_default(f, extra_yaml, "workers", "2");
    put_default(f, extra_yaml, "start_response_delay_interval", "1s");
    put_default(f, extra_yaml, "endpoint_timeout", "5s");
    put_default(f, extra_yaml, "endpoint_dial_timeout", "1s");
    put_default(f, extra_yaml, "drain_timeout", "5s");
    if (!yaml_has_key(extra_yaml, "logging"))
        fprintf(f, "logging:\n  level: info\n");
    if (!yaml_has_key(extra_yaml, "access_log"))
        fprintf(f, "access_log:\n  file: %s\n", cr->access_log_path);
    if (extra_yaml)
        fprintf(f, "%s\n", extra_yaml);
    fclose(f);

    ts_register_log("crouter log", cr->log_path);
    const char *argv[] = {ts_crouter_bin(), "-c", cr->config_path, NULL};
    cr->pid = ts_spawn(argv, cr->log_path);
    return cr->pid > 0 ? 0 : -1;
}

bool ts_crouter_alive(ts_crouter_t *cr)
{
    if (cr->pid <= 0)
        return false;
    int st;
    if (ts_process_exited(cr->pid, &st)) {
        cr->exit_status = st;
        cr->pid = 0;
        return false;
    }
    return true;
}

bool ts_crouter_wait_healthy(ts_crouter_t *cr, int timeout_ms)
{
    int64_t deadline = ts_now_ms() + timeout_ms;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/health", cr->status_port);
    CURL *c = curl_easy_init();
    bool ok = false;
    do {
        if (!ts_crouter_alive(cr)) {
            fprintf(stderr, "testsupport: crouter exited (status 0x%x) before becoming healthy\n",
                    (unsigned)cr->exit_status);
            break;
        }
        curl_easy_reset(c);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_NOBODY, 0L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 200L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        FILE *devnull = fopen("/dev/null", "w");
        curl_easy_setopt(c, CURLOPT_WRITEDATA, devnull);
        long code = 0;
        if (curl_easy_perform(c) == CURLE_OK)
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        fclose(devnull);
        if (code == 200) {
            ok = true;
            break;
        }
        ts_sleep_ms(25);
    } while (ts_now_ms() < deadline);
    curl_easy_cleanup(c);
    return ok;
}

int ts_crouter_start(ts_crouter_t *cr, const ts_nats_t *nats, const char *extra_yaml)
{
    if (ts_crouter_spawn(cr, nats, extra_yaml) != 0)
        return -1;
    if (!ts_crouter_wait_healthy(cr, 20000)) {
        fprintf(stderr, "testsupport: crouter (config %s) never became healthy\n", cr->config_path);
        ts_print_file_tail("crouter config", cr->config_path, 4000);
        ts_print_file_tail("crouter log", cr->log_path, 8000);
        return -1;
    }
    return 0;
}

int ts_crouter_stop(ts_crouter_t *cr, int timeout_ms)
{
    if (cr->pid > 0) {
        cr->exit_status = ts_stop_process(cr->pid, SIGTERM, timeout_ms);
        cr->pid = 0;
    }
    int st = cr->exit_status;
    if (!(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        fprintf(stderr, "testsupport: crouter did not exit cleanly (wait status 0x%x)\n", (unsigned)st);
        ts_print_file_tail("crouter log", cr->log_path, 12000);
    }
    return st;
}

bool ts_crouter_stop_clean(ts_crouter_t *cr, int timeout_ms)
{
    int st = ts_crouter_stop(cr, timeout_ms);
    return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static json_t *get_json(uint16_t port, const char *path, const char *user, const char *pass)
{
    char userpwd[80];
    snprintf(userpwd, sizeof userpwd, "%s:%s", user, pass);
    ts_req_t req = {.path = path, .userpwd = userpwd, .timeout_ms = 5000};
    ts_resp_t resp;
    if (ts_http(NULL, port, &req, &resp) != 0 || resp.status != 200) {
        ts_resp_free(&resp);
        return NULL;
    }
    json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
    ts_resp_free(&resp);
    return j;
}

json_t *ts_crouter_routes(const ts_crouter_t *cr)
{
    return get_json(cr->routes_port, "/routes", cr->user, cr->pass);
}

json_t *ts_crouter_varz(const ts_crouter_t *cr)
{
    return get_json(cr->status_port, "/varz", cr->user, cr->pass);
}

bool ts_crouter_wait_route(const ts_crouter_t *cr, const char *key, size_t n, int timeout_ms)
{
    int64_t deadline = ts_now_ms() + timeout_ms;
    do {
        json_t *routes = ts_crouter_routes(cr);
        if (routes) {
            json_t *eps = json_object_get(routes, key);
            size_t have = json_is_array(eps) ? json_array_size(eps) : 0;
            json_decref(routes);
            if (have == n)
                return true;
        }
        ts_sleep_ms(20);
    } while (ts_now_ms() < deadline);
    return false;
}

int ts_backend_start(ts_backend_t *b, const char *name, const char *const extra_args[])
{
    memset(b, 0, sizeof *b);
    b->port = ts_free_port();
    snprintf(b->name, sizeof b->name, "%s", name);
    char title[64];
    snprintf(title, sizeof title, "fake_backend %s", name);
    ts_tmp_path(b->log_path, sizeof b->log_path, title + 5, ".log");
    ts_register_log(title, b->log_path);
    char port[16];
    snprintf(port, sizeof port, "%u", b->port);
    const char *argv[48] = {ts_fake_backend_bin(), "--port", port, "--name", name};
    size_t n = 5;
    for (size_t i = 0; extra_args && extra_args[i] && n < 47; i++)
        argv[n++] = extra_args[i];
    argv[n] = NULL;
    b->pid = ts_spawn(argv, b->log_path);
    if (b->pid < 0)
        return -1;
    if (!ts_wait_port_open(b->port, 10000)) {
        ts_print_file_tail(title, b->log_path, 4000);
        return -1;
    }
    return 0;
}

void ts_backend_stop(ts_backend_t *b)
{
    if (b->pid > 0)
        ts_stop_process(b->pid, SIGKILL, 2000);
    b->pid = 0;
}

long ts_backend_count(const ts_backend_t *b, long *smuggled)
{
    ts_req_t req = {.path = "/count", .timeout_ms = 5000};
    ts_resp_t resp;
    long n = -1;
    if (ts_http(NULL, b->port, &req, &resp) == 0 && resp.status == 200) {
        json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
        if (j) {
            n = (long)json_integer_value(json_object_get(j, "count"));
            if (smuggled)
                *smuggled = (long)json_integer_value(json_object_get(j, "smuggled"));
            json_decref(j);
        }
    }
    ts_resp_free(&resp);
    return n;
}
