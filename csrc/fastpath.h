/* What the wait loop (wait.c) asks of the fast path (fastpath.c) at a stop.
 * Not part of the Python interface (core.h). */
#ifndef UMVU_FASTPATH_H
#define UMVU_FASTPATH_H

/* What umvu_fast_decide says to do at a seccomp stop. */
enum umvu_verdict {
    UMVU_V_PYTHON = 0,          /* hand the stop to Python                    */
    UMVU_V_RESUME = 1,          /* let the kernel run the call as it is       */
    UMVU_V_REWRITE = 2,         /* umvu_fast_rewrite, then to the exit stop   */
    UMVU_V_ANSWERED = 3,        /* skip the call: its result is in *result    */
    UMVU_V_JOURNALED = 4,       /* resume; an entry was written to *journal   */
    UMVU_V_TO_EXIT = 5,         /* resume to the exit stop, where
                                   umvu_fast_restore journals the result     */
};
/* journal: where an entry may be written (the wait loop keeps the journal
 * below UMVU_JOURNAL_MAX at every stop, so there is always room) */
enum umvu_verdict umvu_fast_decide(int tid, long nr, const unsigned long *args,
                                   long *result, struct umvu_journal_entry *journal);
/* after UMVU_V_REWRITE: point the argument at the host path; the
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
