/* noyield.c - a no-op sched_yield() for the programs that link it (kumo-server,
 * kumomergedb; see Makefile.am).
 *
 * Debian's Tokyo Cabinet calls sched_yield() from its record writer about once per put,
 * even without tchdbsetmutex (measured: 28,807 yields for 40,000 tchdbputproc calls).  In
 * a single-threaded event loop a yield only hands the CPU to other processes and adds
 * latency to every request, so these programs define it as a no-op and the dynamic
 * linker binds TC's calls to this definition.  Their own threads synchronise with
 * mutexes and never rely on yielding.  It lives in its own file, listed in each
 * program's sources, so that linking the store library alone never changes the C
 * library's behaviour behind a program's back. */
#include <sched.h>

int sched_yield(void)
{
    return 0;
}
