/* gc_protocol.h: gradcheck's external-layer protocol, version 1, for C and C++ clients.
 *
 * Header-only, C99, standard library only: copy it next to your layer. The protocol itself is
 * described in docs/external-protocol.md; this file implements the "binary" array encoding
 * (raw little-endian float64, row-major).
 *
 *   gc_handshake();                      once, at start-up
 *   while (gc_read(&msg)) { ... }        one request at a time (returns 0 on 'quit')
 *   gc_get(&msg, "x")                    an array of the request (NULL if absent)
 *   gc_field(&msg, "seed")               the text after a field's name (NULL if absent)
 *   gc_option(&msg, "kernel", 3)         an integer option, with a default
 *   gc_ok(); gc_write_array(...); gc_end();   a reply
 *   gc_error("message")                  or an error reply (the child stays ready)
 *   gc_free(&msg)                        release the request's arrays
 *
 * On end of input the process exits with status 0: gradcheck has gone away.
 */
#ifndef GC_PROTOCOL_H
#define GC_PROTOCOL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GC_VERSION 1
#define GC_MAX_LINE 4096
#define GC_MAX_ARRAYS 16
#define GC_MAX_FIELDS 64
#define GC_MAX_DIMS 8

typedef struct {
    char name[64];
    int ndim;
    long dims[GC_MAX_DIMS];
    long size;    /* number of values: the product of dims */
    double *data; /* row-major (C order) */
} gc_array;

typedef struct {
    char verb[32];
    int n_fields;
    char fields[GC_MAX_FIELDS][GC_MAX_LINE]; /* whole field lines, e.g. "seed 42" */
    int n_arrays;
    gc_array arrays[GC_MAX_ARRAYS];
} gc_message;

static void gc_die(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fputs("gc_protocol: ", stderr); /* diagnostics go to stderr: stdout carries the protocol */
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);
    exit(2);
}

static int gc_little_endian(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

static void gc_swap8(double *values, long n) {
    for (long i = 0; i < n; i++) {
        uint8_t *b = (uint8_t *)&values[i];
        for (int k = 0; k < 4; k++) { uint8_t t = b[k]; b[k] = b[7 - k]; b[7 - k] = t; }
    }
}

/* Read one line without its newline; exit quietly at end of input. */
static void gc_read_line(char *line) {
    if (!fgets(line, GC_MAX_LINE, stdin)) exit(0);
    size_t len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
}

static void gc_handshake(void) {
    char line[GC_MAX_LINE];
    int version = 0;
    gc_read_line(line);
    if (sscanf(line, "gradcheck-external %d", &version) != 1 || version != GC_VERSION)
        gc_die("expected 'gradcheck-external %d', got '%s'", GC_VERSION, line);
    printf("gradcheck-external %d binary\n", GC_VERSION);
    fflush(stdout);
}

static void gc_free(gc_message *msg) {
    for (int i = 0; i < msg->n_arrays; i++) free(msg->arrays[i].data);
    msg->n_arrays = 0;
    msg->n_fields = 0;
}

/* Read one request into msg. Returns 0 for 'quit', 1 otherwise. */
static int gc_read(gc_message *msg) {
    char line[GC_MAX_LINE];
    msg->n_fields = msg->n_arrays = 0;
    gc_read_line(line);
    if (sscanf(line, "%31s", msg->verb) != 1) gc_die("empty request line");
    if (strcmp(msg->verb, "quit") == 0) return 0;
    for (;;) {
        gc_read_line(line);
        if (strcmp(line, "end") == 0) return 1;
        if (strncmp(line, "array ", 6) == 0) {
            if (msg->n_arrays == GC_MAX_ARRAYS) gc_die("too many arrays");
            gc_array *a = &msg->arrays[msg->n_arrays++];
            int used = 0;
            char *p = line + 6;
            if (sscanf(p, "%63s %d%n", a->name, &a->ndim, &used) != 2 || a->ndim > GC_MAX_DIMS)
                gc_die("bad array line '%s'", line);
            p += used;
            a->size = 1;
            for (int d = 0; d < a->ndim; d++) {
                a->dims[d] = strtol(p, &p, 10);
                a->size *= a->dims[d];
            }
            a->data = malloc((size_t)(a->size > 0 ? a->size : 1) * sizeof(double));
            if (!a->data) gc_die("out of memory for array %s", a->name);
            if (fread(a->data, sizeof(double), (size_t)a->size, stdin) != (size_t)a->size) exit(0);
            if (!gc_little_endian()) gc_swap8(a->data, a->size);
        } else {
            if (msg->n_fields == GC_MAX_FIELDS) gc_die("too many fields");
            strcpy(msg->fields[msg->n_fields++], line);
        }
    }
}

static gc_array *gc_get(gc_message *msg, const char *name) {
    for (int i = 0; i < msg->n_arrays; i++)
        if (strcmp(msg->arrays[i].name, name) == 0) return &msg->arrays[i];
    return NULL;
}

/* The text after "NAME " of the first field line called NAME. */
static const char *gc_field(const gc_message *msg, const char *name) {
    size_t n = strlen(name);
    for (int i = 0; i < msg->n_fields; i++)
        if (strncmp(msg->fields[i], name, n) == 0 && msg->fields[i][n] == ' ')
            return msg->fields[i] + n + 1;
    return NULL;
}

/* An integer option from the build request ("option NAME VALUE"), or fallback. */
static long gc_option(const gc_message *msg, const char *name, long fallback) {
    size_t n = strlen(name);
    for (int i = 0; i < msg->n_fields; i++) {
        const char *f = msg->fields[i];
        if (strncmp(f, "option ", 7) == 0 && strncmp(f + 7, name, n) == 0 && f[7 + n] == ' ')
            return strtol(f + 8 + n, NULL, 10);
    }
    return fallback;
}

static void gc_ok(void) { fputs("ok\n", stdout); }

static void gc_end(void) {
    fputs("end\n", stdout);
    fflush(stdout);
}

static void gc_write_array(const char *name, int ndim, const long *dims, const double *data) {
    long size = 1;
    printf("array %s %d", name, ndim);
    for (int d = 0; d < ndim; d++) { printf(" %ld", dims[d]); size *= dims[d]; }
    putchar('\n');
    if (gc_little_endian()) {
        fwrite(data, sizeof(double), (size_t)size, stdout);
    } else {
        for (long i = 0; i < size; i++) {
            double v = data[i];
            gc_swap8(&v, 1);
            fwrite(&v, sizeof(double), 1, stdout);
        }
    }
}

static void gc_error(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fputs("error ", stdout);
    vprintf(fmt, args);
    fputc('\n', stdout);
    fflush(stdout);
    va_end(args);
}

#endif /* GC_PROTOCOL_H */
