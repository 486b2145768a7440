/* test/support/ts_nats.c - nats-server processes and nats.c publishing helpers. */
#include "testsupport.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* nats-server from PATH; Debian installs it in /usr/sbin, which a non-root
 * PATH may lack, so that and /usr/local/bin are tried as well. */
static const char *nats_server_bin(void)
{
    static char found[512];
    if (found[0])
        return found;
    const char *path = getenv("PATH");
    char *dup = strdup(path ? path : ""), *save = NULL;
    for (char *dir = strtok_r(dup, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        snprintf(found, sizeof found, "%s/nats-server", dir);
        if (access(found, X_OK) == 0) {
            free(dup);
            return found;
        }
    }
    free(dup);
    const char *fallback[] = {"/usr/sbin/nats-server", "/usr/local/bin/nats-server", "/usr/bin/nats-server"};
    for (size_t i = 0; i < sizeof fallback / sizeof fallback[0]; i++) {
        if (access(fallback[i], X_OK) == 0) {
            snprintf(found, sizeof found, "%s", fallback[i]);
            return found;
        }
    }
    found[0] = '\0';
    return "nats-server";
}

static int nats_spawn(ts_nats_t *n)
{
    char port[16];
    snprintf(port, sizeof port, "%u", n->port);
    ts_tmp_path(n->log_path, sizeof n->log_path, "nats-server", ".log");
    ts_register_log("nats-server log", n->log_path);
    const char *argv[48] = {nats_server_bin(), "-a", "127.0.0.1", "-p", port};
    size_t argc = 5;
    if (n->trace)
        argv[argc++] = "-V";
    for (size_t i = 0; n->extra_args && n->extra_args[i] && argc + 1 < sizeof argv / sizeof argv[0]; i++)
        argv[argc++] = n->extra_args[i];
    argv[argc] = NULL;
    n->pid = ts_spawn(argv, n->log_path);
    if (n->pid < 0)
        return -1;
    if (!ts_wait_port_open(n->port, 10000)) {
        fprintf(stderr, "testsupport: nats-server did not listen on %u\n", n->port);
        ts_print_file_tail("nats-server log", n->log_path, 4000);
        return -1;
    }
    return 0;
}

int ts_nats_start(ts_nats_t *n, bool trace)
{
    return ts_nats_start_on_port(n, ts_free_port(), trace);
}

int ts_nats_start_on_port(ts_nats_t *n, uint16_t port, bool trace)
{
    memset(n, 0, sizeof *n);
    n->trace = trace;
    n->port = port;
    snprintf(n->url, sizeof n->url, "nats://127.0.0.1:%u", n->port);
    return nats_spawn(n);
}

int ts_nats_start_with_args(ts_nats_t *n, uint16_t port, const char *const extra_args[])
{
    memset(n, 0, sizeof *n);
    n->port = port;
    n->extra_args = extra_args;
    snprintf(n->url, sizeof n->url, "nats://127.0.0.1:%u", n->port);
    return nats_spawn(n);
}

int ts_nats_start_again(ts_nats_t *n)
{
    if (n->pid > 0)
        return -1;
    return nats_spawn(n);
}

int ts_nats_stop(ts_nats_t *n)
{
    if (n->pid <= 0)
        return 0;
    ts_stop_process(n->pid, SIGTERM, 5000);
    n->pid = 0;
    return ts_wait_port_closed(n->port, 5000) ? 0 : -1;
}

int ts_nats_restart(ts_nats_t *n)
{
    if (ts_nats_stop(n) != 0)
        return -1;
    return nats_spawn(n);
}

natsConnection *ts_nats_connect(const ts_nats_t *n)
{
    natsOptions *opts = NULL;
    natsConnection *nc = NULL;
    if (natsOptions_Create(&opts) != NATS_OK)
        return NULL;
    natsOptions_SetURL(opts, n->url);
    natsOptions_SetAllowReconnect(opts, true);
    natsOptions_SetMaxReconnect(opts, -1);
    natsOptions_SetReconnectWait(opts, 50);
    natsOptions_SetReconnectJitter(opts, 0, 0);
    natsOptions_SetTimeout(opts, 2000);
    natsStatus s = natsConnection_Connect(&nc, opts);
    natsOptions_Destroy(opts);
    if (s != NATS_OK) {
        fprintf(stderr, "testsupport: nats connect %s: %s\n", n->url, natsStatus_GetText(s));
        return NULL;
    }
    return nc;
}

bool ts_nats_wait_connected(natsConnection *nc, int timeout_ms)
{
    int64_t deadline = ts_now_ms() + timeout_ms;
    do {
        if (natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED &&
            natsConnection_FlushTimeout(nc, 500) == NATS_OK)
            return true;
        ts_sleep_ms(20);
    } while (ts_now_ms() < deadline);
    return false;
}

void ts_nats_close(natsConnection *nc)
{
    if (!nc)
        return;
    natsConnection_Close(nc);
    natsConnection_Destroy(nc);
}

char *ts_route_json(const ts_route_t *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "host", json_string(r->host ? r->host : "127.0.0.1"));
    json_object_set_new(o, "port", json_integer(r->port));
    json_t *uris = json_array();
    for (size_t i = 0; i < sizeof r->uris / sizeof r->uris[0] && r->uris[i]; i++)
        json_array_append_new(uris, json_string(r->uris[i]));
    json_object_set_new(o, "uris", uris);
    if (r->app)
        json_object_set_new(o, "app", json_string(r->app));
    if (r->private_instance_id)
        json_object_set_new(o, "private_instance_id", json_string(r->private_instance_id));
    if (r->private_instance_index)
        json_object_set_new(o, "private_instance_index", json_string(r->private_instance_index));
    if (r->stale_threshold_in_seconds)
        json_object_set_new(o, "stale_threshold_in_seconds", json_integer(r->stale_threshold_in_seconds));
    if (r->tags_json) {
        json_t *tags = json_loads(r->tags_json, 0, NULL);
        if (tags)
            json_object_set_new(o, "tags", tags);
    }
    if (r->lb_algo) {
        json_t *opt = json_object();
        json_object_set_new(opt, "loadbalancing", json_string(r->lb_algo));
        json_object_set_new(o, "options", opt);
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
}

int ts_nats_publish(natsConnection *nc, const char *subject, const void *data, size_t len)
{
    if (natsConnection_Publish(nc, subject, data, (int)len) != NATS_OK)
        return -1;
    return natsConnection_FlushTimeout(nc, 5000) == NATS_OK ? 0 : -1;
}

static int publish_route(natsConnection *nc, const char *subject, const ts_route_t *r)
{
    char *s = ts_route_json(r);
    int rc = ts_nats_publish(nc, subject, s, strlen(s));
    free(s);
    return rc;
}

int ts_nats_register(natsConnection *nc, const ts_route_t *r)
{
    return publish_route(nc, "router.register", r);
}

int ts_nats_unregister(natsConnection *nc, const ts_route_t *r)
{
    return publish_route(nc, "router.unregister", r);
}
