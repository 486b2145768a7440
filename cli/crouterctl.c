/* cli/crouterctl.c - the operator's command-line tool for a running crouter.
 *
 * Reads the route table and health over the status API (libcurl, basic
 * auth) and publishes gorouter-format router.register / router.unregister
 * messages over NATS (nats.c), optionally repeating them like an app's
 * heartbeat until SIGINT/SIGTERM, then unregistering. Addresses and
 * credentials come from flags, else from the crouter config file given with
 * -c (the same file crouter reads), else from the defaults
 * http://127.0.0.1:8080 and nats://127.0.0.1:4222.
 *
 * Exit codes: 0 success (health: healthy), 1 failure (unreachable,
 * rejected, unhealthy), 2 usage error. One thread, plus nats.c's own.
 * Owns everything it allocates; all of it is freed before exit so the tool
 * runs clean under LeakSanitizer in the integration tests.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <nats/nats.h>

#include "common/clock.h"
#include "common/defs.h"
#include "common/xalloc.h"
#include "config/config.h"

#ifndef CROUTER_VERSION
#define CROUTER_VERSION "0.1.0" /* CMakeLists.txt project(VERSION) when the build does not pass it */
#endif

#define EXIT_FAIL  1
#define EXIT_USAGE 2

#define DEFAULT_STATUS_URL "http://127.0.0.1:8080"
#define DEFAULT_NATS_URL   "nats://127.0.0.1:4222"
#define HTTP_TIMEOUT_S     10L
#define NATS_TIMEOUT_MS    5000
#define MAX_BODY_BYTES     ((size_t)1 << 30)

static const char USAGE[] =
    "Usage: crouterctl [GLOBAL OPTIONS] COMMAND [COMMAND OPTIONS]\n"
    "\n"
    "Commands:\n"
    "  routes [--json] [--routes-port]\n"
    "        Print the route table (GET /routes) as a table: ROUTE, ADDRESS,\n"
    "        INSTANCE, TTL, TLS, one row per endpoint. --json prints the raw JSON.\n"
    "        --routes-port asks 127.0.0.1:status.routes.port (needs -c) instead\n"
    "        of the status port.\n"
    "  health\n"
    "        GET /health; prints the result; exit 0 when healthy (200), else 1.\n"
    "  register   --uri U [--uri U2 ...] --host H --port P [--tls-port T]\n"
    "             [--instance-id I] [--app GUID] [--index N] [--every 20s]\n"
    "  unregister --uri U [--uri U2 ...] --host H --port P [--tls-port T]\n"
    "             [--instance-id I] [--app GUID] [--index N]\n"
    "        Publish a gorouter-format message on router.register or\n"
    "        router.unregister. With --every DURATION (\"20s\", \"1m\"), register\n"
    "        keeps publishing at that interval until SIGINT/SIGTERM, then\n"
    "        unregisters.\n"
    "\n"
    "Global options (flags override the config file):\n"
    "  -c, --config FILE   take addresses and credentials from a crouter config:\n"
    "                      status.host/port/user/pass, status.routes.port,\n"
    "                      nats.hosts, nats.user/pass\n"
    "  --status-url URL    status API base URL (default " DEFAULT_STATUS_URL ")\n"
    "  --user U, --pass P  status API basic-auth credentials\n"
    "  --nats-url URL      NATS server(s), comma-separated (default " DEFAULT_NATS_URL ")\n"
    "  -h, --help          this text\n"
    "  --version           print the version\n"
    "\n"
    "Exit status: 0 success, 1 failure, 2 usage error.\n";

typedef enum { CMD_NONE, CMD_ROUTES, CMD_HEALTH, CMD_REGISTER, CMD_UNREGISTER } command_t;

typedef struct options {
    const char *config_path;
    const char *status_url;       /* borrowed from argv, or NULL */
    const char *user;
    const char *pass;
    const char *nats_url;
    command_t command;
    bool json;
    bool routes_port;
    const char **uris;            /* owned array; strings borrowed from argv */
    size_t uris_len;
    const char *host;
    uint16_t port;                /* 0 = not given */
    uint16_t tls_port;            /* 0 = not given */
    const char *instance_id;
    const char *app;
    const char *index;
    int64_t every_ns;             /* 0 = publish once */
    const char *register_flag;    /* first register-only flag seen, for messages */
} options_t;

/* Where to talk to, after flags, config file and defaults are combined. */
typedef struct target {
    char *status_url;             /* owned, no trailing slash */
    char *routes_url;             /* owned: base URL for /routes */
    char *user;                   /* owned, "" = no auth */
    char *pass;                   /* owned */
    char *nats_url;               /* owned: comma-separated servers */
    char *nats_user;              /* owned, "" = none (URL credentials still work) */
    char *nats_pass;              /* owned */
} target_t;

static void errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void errorf(const char *fmt, ...)
{
    va_list ap;
    fputs("crouterctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("crouterctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nRun 'crouterctl --help' for usage.\n", stderr);
    return EXIT_USAGE;
}

/* --- argument parsing ---------------------------------------------------- */

/* Matches argv[*i] against "--name VALUE" or "--name=VALUE" (and the short
 * alias when given). Returns 1 and sets *out on a match (advancing *i past a
 * separate value), 0 when argv[*i] is another option, -1 when the value is
 * missing. */
static int take_value(int argc, char **argv, int *i, const char *name, const char *alias,
                      const char **out)
{
    const char *arg = argv[*i];
    size_t n = strlen(name);
    if (strncmp(arg, name, n) == 0 && arg[n] == '=') {
        *out = arg + n + 1;
        return 1;
    }
    if (strcmp(arg, name) != 0 && !(alias && strcmp(arg, alias) == 0))
        return 0;
    if (*i + 1 >= argc)
        return -1;
    *i += 1;
    *out = argv[*i];
    return 1;
}

static bool parse_port(const char *s, uint16_t *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > 65535)
        return false;
    *out = (uint16_t)v;
    return true;
}

static bool is_digits(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

static command_t parse_command(const char *s)
{
    if (strcmp(s, "routes") == 0)
        return CMD_ROUTES;
    if (strcmp(s, "health") == 0)
        return CMD_HEALTH;
    if (strcmp(s, "register") == 0)
        return CMD_REGISTER;
    if (strcmp(s, "unregister") == 0)
        return CMD_UNREGISTER;
    return CMD_NONE;
}

static const char *const REGISTER_OPTIONS[] = {
    "--uri", "--host", "--port", "--tls-port", "--instance-id", "--app", "--index", "--every",
};

/* Stores one register/unregister option (not --every). 0 or EXIT_USAGE. */
static int set_register_option(options_t *opts, const char *name, const char *v)
{
    if (strcmp(name, "--uri") == 0) {
        if (*v == '\0')
            return usage_error("--uri must not be empty");
        opts->uris = cr_xrealloc(opts->uris, (opts->uris_len + 1) * sizeof(*opts->uris));
        opts->uris[opts->uris_len++] = v;
    } else if (strcmp(name, "--host") == 0) {
        if (*v == '\0')
            return usage_error("--host must not be empty");
        opts->host = v;
    } else if (strcmp(name, "--port") == 0) {
        if (!parse_port(v, &opts->port))
            return usage_error("--port: \"%s\" is not a port number (1-65535)", v);
    } else if (strcmp(name, "--tls-port") == 0) {
        if (!parse_port(v, &opts->tls_port))
            return usage_error("--tls-port: \"%s\" is not a port number (1-65535)", v);
    } else if (strcmp(name, "--instance-id") == 0) {
        opts->instance_id = v;
    } else if (strcmp(name, "--app") == 0) {
        opts->app = v;
    } else if (strcmp(name, "--index") == 0) {
        if (!is_digits(v))
            return usage_error("--index: \"%s\" is not a non-negative integer", v);
        opts->index = v;
    }
    return 0;
}

/* Fills opts from argv. Returns -1 to continue, or an exit code (0 after
 * --help/--version, EXIT_USAGE on a bad command line). Options may come
 * before or after the command. */
static int parse_args(int argc, char **argv, options_t *opts)
{
    const char *json_flag = NULL, *routes_port_flag = NULL;
    const char *every = NULL;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *v = NULL;
        int r;

        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0 || strcmp(arg, "help") == 0) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("crouterctl %s\n", CROUTER_VERSION);
            return 0;
        }
        if (strcmp(arg, "--json") == 0) {
            opts->json = true;
            json_flag = arg;
            continue;
        }
        if (strcmp(arg, "--routes-port") == 0) {
            opts->routes_port = true;
            routes_port_flag = arg;
            continue;
        }

#define VALUE_OPT(name, alias, field)                                        \
        if ((r = take_value(argc, argv, &i, name, alias, &v)) != 0) {        \
            if (r < 0)                                                       \
                return usage_error("%s needs a value", name);                \
            field = v;                                                       \
            continue;                                                        \
        }
        VALUE_OPT("--config", "-c", opts->config_path)
        VALUE_OPT("--status-url", NULL, opts->status_url)
        VALUE_OPT("--user", NULL, opts->user)
        VALUE_OPT("--pass", NULL, opts->pass)
        VALUE_OPT("--nats-url", NULL, opts->nats_url)
#undef VALUE_OPT

        /* register/unregister options (checked against the command below) */
        for (size_t k = 0; k < CR_ARRAY_LEN(REGISTER_OPTIONS); k++) {
            const char *name = REGISTER_OPTIONS[k];
            if ((r = take_value(argc, argv, &i, name, NULL, &v)) == 0)
                continue;
            if (r < 0)
                return usage_error("%s needs a value", name);
            if (!opts->register_flag && strcmp(name, "--every") != 0)
                opts->register_flag = name;
            if (strcmp(name, "--every") == 0)
                every = v;
            else if ((r = set_register_option(opts, name, v)) != 0)
                return r;
            break;
        }
        if (v != NULL)
            continue;

        if (arg[0] == '-')
            return usage_error("unknown option %s", arg);
        if (opts->command != CMD_NONE)
            return usage_error("unexpected argument \"%s\"", arg);
        opts->command = parse_command(arg);
        if (opts->command == CMD_NONE)
            return usage_error("unknown command \"%s\" (routes, health, register, unregister)", arg);
    }

    if (opts->command == CMD_NONE)
        return usage_error("no command given (routes, health, register, unregister)");

    bool is_reg = opts->command == CMD_REGISTER || opts->command == CMD_UNREGISTER;
    if (!is_reg && opts->register_flag)
        return usage_error("%s is an option of register and unregister", opts->register_flag);
    if (opts->command != CMD_ROUTES && json_flag)
        return usage_error("--json is an option of routes");
    if (opts->command != CMD_ROUTES && routes_port_flag)
        return usage_error("--routes-port is an option of routes");
    if (every && opts->command != CMD_REGISTER)
        return usage_error("--every is an option of register");
    if (opts->routes_port && !opts->config_path)
        return usage_error("--routes-port needs -c FILE (the port is status.routes.port)");
    if (is_reg) {
        if (opts->uris_len == 0)
            return usage_error("%s needs at least one --uri",
                               opts->command == CMD_REGISTER ? "register" : "unregister");
        if (!opts->host)
            return usage_error("--host is required");
        if (opts->port == 0 && opts->tls_port == 0)
            return usage_error("--port (or --tls-port) is required");
    }
    if (every) {
        if (cr_duration_parse(every, &opts->every_ns) != 0)
            return usage_error("--every: \"%s\" is not a duration (e.g. 20s, 1m, 500ms)", every);
        if (opts->every_ns < 100 * CR_NS_PER_MS)
            return usage_error("--every: %s is too short (at least 100ms)", every);
    }
    return -1;
}

/* --- resolving addresses ------------------------------------------------- */

static char *strip_trailing_slash(char *url)
{
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        url[--n] = '\0';
    return url;
}

static char *format_url(const char *scheme, const char *host, unsigned port)
{
    /* A wildcard bind address means "this machine": talk to loopback. */
    if (host == NULL || host[0] == '\0' || strcmp(host, "0.0.0.0") == 0)
        host = "127.0.0.1";
    else if (strcmp(host, "::") == 0 || strcmp(host, "[::]") == 0)
        host = "::1";
    bool v6 = strchr(host, ':') != NULL && host[0] != '[';
    char buf[512];
    snprintf(buf, sizeof(buf), "%s://%s%s%s:%u", scheme, v6 ? "[" : "", host, v6 ? "]" : "", port);
    return cr_xstrdup(buf);
}

static void target_deinit(target_t *t)
{
    free(t->status_url);
    free(t->routes_url);
    free(t->user);
    free(t->pass);
    free(t->nats_url);
    free(t->nats_user);
    free(t->nats_pass);
    memset(t, 0, sizeof(*t));
}

/* Combines flags, the config file and defaults into t. 0, or EXIT_FAIL when
 * the config file does not load (the message is printed). */
static int resolve_target(const options_t *opts, target_t *t)
{
    cr_config_t *cfg = NULL;

    if (opts->config_path) {
        char err[512] = "";
        cfg = cr_config_load_file(opts->config_path, err, sizeof(err));
        if (!cfg) {
            errorf("cannot load %s: %s", opts->config_path, err[0] ? err : "invalid config");
            return EXIT_FAIL;
        }
    }

    if (opts->status_url)
        t->status_url = strip_trailing_slash(cr_xstrdup(opts->status_url));
    else if (cfg)
        t->status_url = format_url("http", cfg->status_host, cfg->status_port);
    else
        t->status_url = cr_xstrdup(DEFAULT_STATUS_URL);

    if (opts->routes_port)
        t->routes_url = format_url("http", "127.0.0.1", cfg->status_routes_port);
    else
        t->routes_url = cr_xstrdup(t->status_url);

    t->user = cr_xstrdup(opts->user ? opts->user : cfg ? cfg->status_user : "");
    t->pass = cr_xstrdup(opts->pass ? opts->pass : cfg ? cfg->status_pass : "");

    if (opts->nats_url) {
        t->nats_url = cr_xstrdup(opts->nats_url);
    } else if (cfg && cfg->nats_hosts_len > 0) {
        size_t cap = 1, len = 0;
        for (size_t i = 0; i < cfg->nats_hosts_len; i++)
            cap += strlen(cfg->nats_hosts[i].hostname) + 32;
        t->nats_url = cr_xmalloc(cap);
        t->nats_url[0] = '\0';
        for (size_t i = 0; i < cfg->nats_hosts_len; i++) {
            char *u = format_url("nats", cfg->nats_hosts[i].hostname, cfg->nats_hosts[i].port);
            len += (size_t)snprintf(t->nats_url + len, cap - len, "%s%s", i ? "," : "", u);
            free(u);
        }
    } else {
        t->nats_url = cr_xstrdup(DEFAULT_NATS_URL);
    }
    /* Config credentials apply to the config's servers, not to a URL given
     * on the command line (which carries its own as nats://user:pass@...). */
    bool cfg_nats = cfg && !opts->nats_url;
    t->nats_user = cr_xstrdup(cfg_nats && cfg->nats_user ? cfg->nats_user : "");
    t->nats_pass = cr_xstrdup(cfg_nats && cfg->nats_pass ? cfg->nats_pass : "");

    cr_config_destroy(cfg);
    return 0;
}

/* --- HTTP ---------------------------------------------------------------- */

typedef struct buf {
    char *data;                   /* owned, NUL-terminated */
    size_t len;
    size_t cap;
} buf_t;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
    buf_t *b = arg;
    size_t n = size * nmemb;
    if (b->len + n + 1 > MAX_BODY_BYTES)
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->data = cr_xrealloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* GETs base+path. On a completed exchange returns 0 with *status set and
 * the body in *body (caller frees body->data); on a transport failure
 * prints why and returns EXIT_FAIL. */
static int http_get(const target_t *t, const char *base, const char *path, bool auth,
                    long *status, buf_t *body)
{
    size_t n = strlen(base) + strlen(path) + 1;
    char *url = cr_xmalloc(n);
    snprintf(url, n, "%s%s", base, path);

    CURL *h = curl_easy_init();
    if (!h) {
        errorf("cannot initialise libcurl");
        free(url);
        return EXIT_FAIL;
    }
    char curl_err[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, HTTP_TIMEOUT_S);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "crouterctl/" CROUTER_VERSION);
    if (auth && (t->user[0] || t->pass[0])) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(h, CURLOPT_USERNAME, t->user);
        curl_easy_setopt(h, CURLOPT_PASSWORD, t->pass);
    }
    CURLcode rc = curl_easy_perform(h);
    int ret = 0;
    if (rc != CURLE_OK) {
        errorf("GET %s failed: %s", url, curl_err[0] ? curl_err : curl_easy_strerror(rc));
        ret = EXIT_FAIL;
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    }
    curl_easy_cleanup(h);
    free(url);
    return ret;
}

/* --- routes -------------------------------------------------------------- */

typedef struct row {
    const char *route;            /* borrowed from the parsed JSON */
    const char *address;
    const char *instance;
    char ttl[24];
    const char *tls;
} row_t;

static int compare_rows(const void *a, const void *b)
{
    const row_t *x = a, *y = b;
    int c = strcmp(x->route, y->route);
    if (c == 0)
        c = strcmp(x->address, y->address);
    if (c == 0)
        c = strcmp(x->instance, y->instance);
    return c;
}

static const char *json_str_or(const json_t *obj, const char *key, const char *fallback)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s && s[0] ? s : fallback;
}

/* Prints the /routes JSON as a table. 0, or EXIT_FAIL when it is not the
 * expected shape. */
static int print_routes_table(const char *body, size_t len)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    if (!root || !json_is_object(root)) {
        errorf("/routes did not return a JSON object (%s)", root ? "wrong type" : jerr.text);
        json_decref(root);
        return EXIT_FAIL;
    }

    size_t n = 0, cap = 0;
    row_t *rows = NULL;
    const char *route;
    json_t *eps;
    json_object_foreach(root, route, eps) {
        size_t i;
        json_t *ep;
        if (!json_is_array(eps))
            continue;
        json_array_foreach(eps, i, ep) {
            if (!json_is_object(ep))
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                rows = cr_xrealloc(rows, cap * sizeof(*rows));
            }
            row_t *r = &rows[n++];
            r->route = route;
            r->address = json_str_or(ep, "address", "-");
            r->instance = json_str_or(ep, "private_instance_id", "-");
            json_t *ttl = json_object_get(ep, "ttl");
            if (json_is_integer(ttl))
                snprintf(r->ttl, sizeof(r->ttl), "%lld", (long long)json_integer_value(ttl));
            else
                snprintf(r->ttl, sizeof(r->ttl), "-");
            r->tls = json_is_true(json_object_get(ep, "tls")) ? "yes" : "no";
        }
    }

    if (n == 0) {
        printf("no routes registered\n");
    } else {
        qsort(rows, n, sizeof(*rows), compare_rows);
        int w[4] = {(int)strlen("ROUTE"), (int)strlen("ADDRESS"), (int)strlen("INSTANCE"),
                    (int)strlen("TTL")};
        for (size_t i = 0; i < n; i++) {
            int l[4] = {(int)strlen(rows[i].route), (int)strlen(rows[i].address),
                        (int)strlen(rows[i].instance), (int)strlen(rows[i].ttl)};
            for (int k = 0; k < 4; k++)
                if (l[k] > w[k])
                    w[k] = l[k];
        }
        printf("%-*s  %-*s  %-*s  %*s  %s\n", w[0], "ROUTE", w[1], "ADDRESS", w[2], "INSTANCE",
               w[3], "TTL", "TLS");
        for (size_t i = 0; i < n; i++)
            printf("%-*s  %-*s  %-*s  %*s  %s\n", w[0], rows[i].route, w[1], rows[i].address,
                   w[2], rows[i].instance, w[3], rows[i].ttl, rows[i].tls);
    }
    free(rows);
    json_decref(root);
    return 0;
}

static int cmd_routes(const options_t *opts, const target_t *t)
{
    long status = 0;
    buf_t body = {0};
    int ret = http_get(t, t->routes_url, "/routes", true, &status, &body);
    if (ret != 0)
        goto out;
    if (status == 401) {
        errorf("%s/routes: 401 Unauthorized: wrong or missing credentials "
               "(--user/--pass, or status.user/status.pass with -c FILE)", t->routes_url);
        ret = EXIT_FAIL;
    } else if (status != 200) {
        errorf("%s/routes answered HTTP %ld", t->routes_url, status);
        ret = EXIT_FAIL;
    } else if (opts->json) {
        if (body.len)
            fwrite(body.data, 1, body.len, stdout);
        if (body.len == 0 || body.data[body.len - 1] != '\n')
            fputc('\n', stdout);
    } else {
        ret = print_routes_table(body.data ? body.data : "", body.len);
    }
out:
    free(body.data);
    return ret;
}

/* --- health -------------------------------------------------------------- */

static int cmd_health(const target_t *t)
{
    long status = 0;
    buf_t body = {0};
    int ret = http_get(t, t->status_url, "/health", false, &status, &body);
    if (ret == 0) {
        if (status == 200) {
            printf("healthy (%s/health: 200)\n", t->status_url);
        } else {
            printf("unhealthy (%s/health: %ld)\n", t->status_url, status);
            ret = EXIT_FAIL;
        }
    }
    free(body.data);
    return ret;
}

/* --- register / unregister ----------------------------------------------- */

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* The gorouter RegistryMessage for opts, as compact JSON (caller frees). */
static char *build_message(const options_t *opts)
{
    json_t *m = json_object();
    json_object_set_new(m, "host", json_string(opts->host));
    if (opts->port)
        json_object_set_new(m, "port", json_integer(opts->port));
    if (opts->tls_port)
        json_object_set_new(m, "tls_port", json_integer(opts->tls_port));
    json_t *uris = json_array();
    for (size_t i = 0; i < opts->uris_len; i++)
        json_array_append_new(uris, json_string(opts->uris[i]));
    json_object_set_new(m, "uris", uris);
    if (opts->app)
        json_object_set_new(m, "app", json_string(opts->app));
    if (opts->instance_id)
        json_object_set_new(m, "private_instance_id", json_string(opts->instance_id));
    if (opts->index) /* a string in gorouter's message */
        json_object_set_new(m, "private_instance_index", json_string(opts->index));
    json_object_set_new(m, "endpoint_updated_at_ns", json_integer(cr_now_real_ns()));
    char *s = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    if (!s) {
        errorf("out of memory encoding the message");
        abort();
    }
    return s;
}

/* Publishes one message and waits for the server to have it. 0 or -1 (the
 * reason is printed). */
static int publish(natsConnection *nc, const char *subject, const options_t *opts, bool quiet)
{
    char *msg = build_message(opts);
    natsStatus s = natsConnection_Publish(nc, subject, msg, (int)strlen(msg));
    if (s == NATS_OK)
        s = natsConnection_FlushTimeout(nc, NATS_TIMEOUT_MS);
    if (s != NATS_OK) {
        errorf("publishing %s failed: %s", subject, natsStatus_GetText(s));
        free(msg);
        return -1;
    }
    if (!quiet)
        printf("%s %s\n", subject, msg);
    fflush(stdout);
    free(msg);
    return 0;
}

/* Sleeps up to ns, returning early when a stop signal arrives. */
static void sleep_interruptible(int64_t ns)
{
    int64_t deadline = cr_now_mono_ns() + ns;
    while (!stop_requested) {
        int64_t left = deadline - cr_now_mono_ns();
        if (left <= 0)
            break;
        if (left > 100 * CR_NS_PER_MS)
            left = 100 * CR_NS_PER_MS;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)left};
        nanosleep(&ts, NULL);
    }
}

static int cmd_publish(const options_t *opts, const target_t *t)
{
    natsOptions *no = NULL;
    natsConnection *nc = NULL;
    natsStatus s;
    int ret = EXIT_FAIL;
    bool repeat = opts->every_ns > 0;

    if ((s = natsOptions_Create(&no)) != NATS_OK)
        goto nats_fail;
    if ((s = natsOptions_SetURL(no, t->nats_url)) != NATS_OK)
        goto nats_fail;
    if (t->nats_user[0] && (s = natsOptions_SetUserInfo(no, t->nats_user, t->nats_pass)) != NATS_OK)
        goto nats_fail;
    if ((s = natsOptions_SetName(no, "crouterctl")) != NATS_OK)
        goto nats_fail;
    if ((s = natsOptions_SetTimeout(no, NATS_TIMEOUT_MS)) != NATS_OK)
        goto nats_fail;
    if (repeat) {
        /* A heartbeat outlives NATS restarts, as an app's registrar does. */
        if ((s = natsOptions_SetMaxReconnect(no, -1)) != NATS_OK)
            goto nats_fail;
        if ((s = natsOptions_SetReconnectWait(no, 1000)) != NATS_OK)
            goto nats_fail;
    }
    if ((s = natsConnection_Connect(&nc, no)) != NATS_OK) {
        errorf("cannot connect to NATS at %s: %s", t->nats_url, natsStatus_GetText(s));
        goto out;
    }

    if (!repeat) {
        const char *subject = opts->command == CMD_REGISTER ? "router.register" : "router.unregister";
        ret = publish(nc, subject, opts, false) == 0 ? 0 : EXIT_FAIL;
        goto out;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    if (publish(nc, "router.register", opts, false) != 0)
        goto out; /* the first one must work: a wrong address should not loop silently */
    fprintf(stderr, "crouterctl: re-registering every %.3gs; Ctrl-C or SIGTERM unregisters and exits\n",
            (double)opts->every_ns / CR_NS_PER_SEC);
    uint64_t sent = 1;
    for (;;) {
        sleep_interruptible(opts->every_ns);
        if (stop_requested)
            break;
        /* Failures while NATS is away are reported and retried next time. */
        if (publish(nc, "router.register", opts, true) == 0)
            sent++;
    }
    fprintf(stderr, "crouterctl: stopping after %llu registrations\n", (unsigned long long)sent);
    ret = publish(nc, "router.unregister", opts, false) == 0 ? 0 : EXIT_FAIL;
    goto out;

nats_fail:
    errorf("NATS options: %s", natsStatus_GetText(s));
out:
    natsConnection_Destroy(nc);
    natsOptions_Destroy(no);
    return ret;
}

/* --- main ---------------------------------------------------------------- */

int main(int argc, char **argv)
{
    options_t opts;
    memset(&opts, 0, sizeof(opts));
    int ret = parse_args(argc, argv, &opts);
    if (ret >= 0) {
        free(opts.uris);
        return ret;
    }

    target_t t;
    memset(&t, 0, sizeof(t));
    if ((ret = resolve_target(&opts, &t)) != 0)
        goto out;

    switch (opts.command) {
    case CMD_ROUTES:
    case CMD_HEALTH:
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            errorf("cannot initialise libcurl");
            ret = EXIT_FAIL;
            break;
        }
        ret = opts.command == CMD_ROUTES ? cmd_routes(&opts, &t) : cmd_health(&t);
        curl_global_cleanup();
        break;
    case CMD_REGISTER:
    case CMD_UNREGISTER:
        ret = cmd_publish(&opts, &t);
        nats_CloseAndWait(2000);
        break;
    case CMD_NONE:
        ret = EXIT_USAGE;
        break;
    }
out:
    target_deinit(&t);
    free(opts.uris);
    return ret;
}
