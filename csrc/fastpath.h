/* What the wait loop (wait.c) asks of the fast path (fastpath.c) at a stop.
 * Not part of the Python interface (core.h). */
#ifndef UMVU_FASTPATH_H
#define UMVU_FASTPATH_H

/* at a seccomp stop: 0 ask Python, 1 resume, 2 rewrite (umvu_fast_rewrite),
 * 3 answered: skip the call, its result in *result; 4 resume, and an entry
 * was written to *journal (NULL: the journal is full, none may be); 5
 * resume to the exit stop, where umvu_fast_restore journals the result */
int umvu_fast_decide(int tid, long nr, const unsigned long *args, long *result,
                     struct umvu_journal_entry *journal);
/* after umvu_fast_decide said 2: point the argument at the host path; the
 * thread is resumed to its exit stop, where umvu_fast_restore puts the
 * registers back. Return 0 when done (else: ask Python). */
int umvu_fast_rewrite(int tid, unsigned long sp);
/* at a syscall-exit stop: 1 when it was a rewritten call, now restored;
 * 2 when it also was an open whose descriptor Python must hear of: the
 * journal entry is written to *journal */
int umvu_fast_restore(int tid, struct umvu_journal_entry *journal);

/* a clone handled in the wait loop: the child starts with its parent's entry */
void umvu_fast_clone(int parent, int child, unsigned long flags);
/* an exec handled in the wait loop: the kernel closed the close-on-exec
 * descriptors, which the C core cannot tell; Python decides for the thread
 * until it has replayed the exec and set the entry again */
void umvu_fast_exec(int tid, int former);

#endif
