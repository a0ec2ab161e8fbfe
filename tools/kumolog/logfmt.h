/* logfmt.h - decoding of one kumolog record and its display line (tools.md §6.1). */
#ifndef KUMO_LOGFMT_H
#define KUMO_LOGFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* tools.md §6: the n bytes at p are a valid record iff they decode to exactly one msgpack
 * [integer, integer, map].  Returns false otherwise.  On success, if line is non-NULL,
 * *line receives the record's display line without a newline (release with free). */
bool logfmt_decode(const uint8_t *p, size_t n, char **line);

#endif
