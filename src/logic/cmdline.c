/* cmdline.c - the daemons' option parser, behaving like the original's "kazuhiki" (cli.md §1). */
#include "logic/cmdline.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logic/xmalloc.h"

/* C++ stream extraction accepts leading white space, an optional sign and decimal
 * digits; a negative number is negated in the unsigned type (it wraps, cli.md §1:
 * `-Yn -1` was accepted by the original).  We do the same; magnitudes above the type's
 * maximum are rejected.  Returns false on anything else. */
static bool parse_unsigned(const char *s, unsigned long long max, unsigned long long *out)
{
    while (isspace((unsigned char)*s))
        s++;
    bool neg = false;
    if (*s == '+' || *s == '-') {
        neg = *s == '-';
        s++;
    }
    if (!isdigit((unsigned char)*s))
        return false;
    unsigned long long v = 0;
    for (; isdigit((unsigned char)*s); s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (max - d) / 10)
            return false;   /* overflow of the target type */
        v = v * 10 + d;
    }
    if (*s != '\0')
        return false;       /* the whole token must be consumed */
    if (neg && v != 0)
        v = max - v + 1;    /* modular negation in the target type */
    *out = v;
    return true;
}

/* Doubles as a C++ stream reads them: decimal digits, point, exponent (no inf/nan/hex). */
static bool parse_double(const char *s, double *out)
{
    while (isspace((unsigned char)*s))
        s++;
    if (*s == '\0' || strspn(s, "0123456789+-.eE") != strlen(s))
        return false;
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE)
        return false;
    *out = d;
    return true;
}

static bool is_true_word(const char *s)
{
    return strcmp(s, "true") == 0 || strcmp(s, "yes") == 0 || strcmp(s, "on") == 0;
}

static bool is_false_word(const char *s)
{
    return strcmp(s, "false") == 0 || strcmp(s, "no") == 0 || strcmp(s, "off") == 0;
}

static const cmdline_opt *find_opt(const cmdline_opt *opts, const char *tok)
{
    /* exact whole-token match: no --opt=value, no bundling, no abbreviations */
    for (const cmdline_opt *o = opts; o->shortname != NULL; o++) {
        if (strcmp(tok, o->shortname) == 0 || (o->longname != NULL && strcmp(tok, o->longname) == 0))
            return o;
    }
    return NULL;
}

/* Parse the value of one option.  *i points at the option token; on return it points at
 * the last consumed token.  Returns NULL or the detail message (in detail). */
static const char *parse_value(const cmdline_opt *o, int argc, char **argv, int *i,
                               char *detail, size_t dlen)
{
    const char *next = *i + 1 < argc ? argv[*i + 1] : NULL;
    unsigned long long u;
    const char *tname = NULL;
    switch (o->type) {
    case CMDLINE_BOOL: {
        /* optional value: only the six words are consumed (cli.md §1) */
        bool v = true;
        if (next != NULL && is_true_word(next)) {
            (*i)++;
        } else if (next != NULL && is_false_word(next)) {
            v = false;
            (*i)++;
        }
        *(bool *)o->value = v;
        return NULL;
    }
    case CMDLINE_STRING:
        if (next == NULL)
            return "string is required.";
        *(const char **)o->value = next;
        (*i)++;
        return NULL;
    case CMDLINE_DOUBLE:
    case CMDLINE_USHORT:
    case CMDLINE_UINT:
    case CMDLINE_ULONG:
        if (next == NULL)
            return "numeric value is required.";
        (*i)++;
        switch (o->type) {
        case CMDLINE_DOUBLE: {
            double d;
            if (parse_double(next, &d)) {
                *(double *)o->value = d;
                return NULL;
            }
            tname = "double";
            break;
        }
        case CMDLINE_USHORT:
            if (parse_unsigned(next, USHRT_MAX, &u)) {
                *(unsigned short *)o->value = (unsigned short)u;
                return NULL;
            }
            tname = "unsigned short";
            break;
        case CMDLINE_UINT:
            if (parse_unsigned(next, UINT_MAX, &u)) {
                *(unsigned int *)o->value = (unsigned int)u;
                return NULL;
            }
            tname = "unsigned int";
            break;
        default:
            if (parse_unsigned(next, ULONG_MAX, &u)) {
                *(unsigned long *)o->value = (unsigned long)u;
                return NULL;
            }
            tname = "unsigned long";
            break;
        }
        snprintf(detail, dlen, "%s is expected: %s", tname, next);
        return detail;
    case CMDLINE_CONNECT:
    case CMDLINE_LISTEN: {
        if (next == NULL)
            return "network address is required.";
        (*i)++;
        int rc = o->type == CMDLINE_CONNECT
                     ? kaddr_parse_connect(o->value, next, o->port, detail, dlen)
                     : kaddr_parse_listen(o->value, next, o->port, detail, dlen);
        return rc == 0 ? NULL : detail;
    }
    }
    assert(!"unknown cmdline_type");
    return "internal error";
}

static int cmp_name_desc(const void *a, const void *b)
{
    const cmdline_opt *x = *(const cmdline_opt *const *)a;
    const cmdline_opt *y = *(const cmdline_opt *const *)b;
    return strcmp(y->shortname, x->shortname);
}

int cmdline_parse(int argc, char **argv, const cmdline_opt *opts, char *err, size_t errlen)
{
    size_t nopts = 0;
    while (opts[nopts].shortname != NULL)
        nopts++;

    /* Our decision (DECISIONS.md §2): -h/--help anywhere asks for the usage, even where
     * the original would have reported an error. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return CMDLINE_HELP;
    }

    bool *seen = xcalloc(nopts + 1, sizeof(*seen));
    const cmdline_opt **missing = NULL;
    size_t nmissing = 0;
    int rc = CMDLINE_OK;
    for (int i = 1; i < argc; i++) {
        const cmdline_opt *o = find_opt(opts, argv[i]);
        if (o == NULL) {
            snprintf(err, errlen, "unexpected argument: %s", argv[i]);
            rc = CMDLINE_ERROR;
            goto out;
        }
        const char *tok = argv[i];
        char detail[256];
        const char *msg = parse_value(o, argc, argv, &i, detail, sizeof(detail));
        if (msg != NULL) {
            snprintf(err, errlen, "argument error `%s': %s", tok, msg);
            rc = CMDLINE_ERROR;
            goto out;
        }
        seen[o - opts] = true;
        if (o->was_set != NULL)
            *o->was_set = true;
    }

    /* All missing required options in one message, reverse lexicographic order of the
     * option name (cli.md §1: kumo-server → "-s, -m, -l").  We sort on the short name;
     * for every option table of the original the long names give the same order. */
    missing = xcalloc(nopts + 1, sizeof(*missing));
    for (size_t k = 0; k < nopts; k++) {
        if (opts[k].required && !seen[k])
            missing[nmissing++] = &opts[k];
    }
    if (nmissing > 0) {
        qsort(missing, nmissing, sizeof(missing[0]), cmp_name_desc);
        size_t off = (size_t)snprintf(err, errlen, "required but not set: ");
        for (size_t k = 0; k < nmissing && off < errlen; k++)
            off += (size_t)snprintf(err + off, errlen - off, "%s%s", k ? ", " : "",
                                    missing[k]->shortname);
        rc = CMDLINE_ERROR;
    }
out:
    free(missing);
    free(seen);
    return rc;
}

void cmdline_fail(const char *usage, const char *msg)
{
    /* cli.md §1.2: usage on stdout, the error line on stderr, status 1 */
    if (usage != NULL)
        fputs(usage, stdout);
    fflush(stdout);
    fprintf(stderr, "error: %s\n", msg);
    exit(1);
}
