/* router/access_log.h - gorouter-format access log, written off the hot path.
 *
 * Workers format a line into a bounded in-memory queue and return at once;
 * a writer thread appends the queue to the file. When the queue is full the
 * line is dropped and counted (a slow disk never stalls proxying).
 * cr_access_log_reopen() (SIGHUP) reopens the path, for log rotation.
 */
#ifndef CR_ROUTER_ACCESS_LOG_H
#define CR_ROUTER_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef struct cr_slice {
    const char *ptr;              /* NULL or len 0 is written as "-" */
    size_t len;
} cr_slice_t;

typedef struct cr_access_record {
    cr_slice_t host;              /* Host as received */
    int64_t received_at_real_ns;  /* wall clock */
    cr_slice_t method, uri, proto; /* uri as received; proto e.g. "HTTP/1.1" */
    int status;                   /* 0 is written as "-" */
    uint64_t request_bytes;       /* request body bytes received */
    uint64_t response_bytes;      /* response body bytes sent */
    cr_slice_t referer, user_agent;
    cr_slice_t client_addr;       /* "ip:port" */
    cr_slice_t backend_addr;      /* "host:port" or empty */
    cr_slice_t x_forwarded_for, x_forwarded_proto; /* as sent to the backend */
    cr_slice_t request_id;
    double response_time_s;       /* negative is written as "-" */
    double gorouter_time_s;       /* time spent in crouter itself */
    cr_slice_t app_id, app_index, instance_id;
    cr_slice_t router_error;
} cr_access_record_t;

typedef struct cr_access_log cr_access_log_t;

/* Opens path for appending and starts the writer thread. NULL on error with
 * a message in err. */
cr_access_log_t *cr_access_log_open(const char *path, char *err, size_t err_cap);

/* Formats and queues one line. Any thread; never blocks on I/O. */
void cr_access_log_write(cr_access_log_t *log, const cr_access_record_t *rec);

/* Reopens the file (after rotation). Any thread. 0 or -errno. */
int cr_access_log_reopen(cr_access_log_t *log);

/* Lines dropped because the queue was full. */
uint64_t cr_access_log_dropped(const cr_access_log_t *log);

/* Flushes the queue, stops the writer, closes. Accepts NULL. */
void cr_access_log_close(cr_access_log_t *log);

/* Formats one line (with its '\n') into out; returns its length, truncating
 * long fields so the line fits cap. For tests and for the writer. */
size_t cr_access_log_format(const cr_access_record_t *rec, char *out, size_t cap);

#endif
