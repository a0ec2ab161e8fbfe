/* record.c - DBKey construction and the store-if-newer / CAS / purge rules of storage.md. */
#include "logic/record.h"

#include <string.h>

#include "logic/hashspace.h"

void dbkey_make(uint8_t *out, const void *key, size_t keylen)
{
    /* storage.md §2.1: H(key) big-endian, i.e. the first 8 digest bytes reversed */
    if (keylen)
        memcpy(out + DBKEY_HASH_LEN, key, keylen);
    dbkey_stamp(out, keylen);
}

void dbkey_stamp(uint8_t *dbkey, size_t keylen)
{
    be64_put(dbkey, hs_hash(dbkey + DBKEY_HASH_LEN, keylen));
}

bool record_should_replace(const void *old, size_t oldlen, clocktime_t incoming)
{
    /* storage.md §4.1: absent or malformed (< 8 bytes) → store; otherwise only a strictly
     * newer version wins.  A tombstone is an ordinary 8-byte value here. */
    if (old == NULL || oldlen < TOMBSTONE_LEN)
        return true;
    return clocktime_less(dbvalue_clocktime(old), incoming);
}

bool record_cas_matches(const void *old, size_t oldlen, clocktime_t compare)
{
    /* storage.md §4.4: absent → succeeds (TC put semantics); < 8 bytes → fails; else an
     * exact 64-bit match, tombstones included */
    if (old == NULL)
        return true;
    if (oldlen < TOMBSTONE_LEN)
        return false;
    return dbvalue_clocktime(old) == compare;
}

bool record_tombstone_collectable(const void *old, size_t oldlen, clocktime_t ct)
{
    /* storage.md §5.1: "stored ClockTime <= entry ClockTime", with <= meaning
     * not (stored > entry) under the ClockTime order; malformed values always go */
    if (old == NULL)
        return false;
    if (oldlen < TOMBSTONE_LEN)
        return true;
    return !clocktime_less(ct, dbvalue_clocktime(old));
}
