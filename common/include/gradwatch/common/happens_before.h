// Happens-before edges that gRPC guarantees but ThreadSanitizer cannot see.
//
// gRPC orders what a thread did before it starts an operation on a reactor (StartCall,
// StartRead, StartWrite, Finish, ...) before that operation's reaction, often run on another
// thread, and every reaction before OnDone. Debian's gRPC and abseil are not built with
// ThreadSanitizer, so the locks and atomics behind that ordering are invisible to it: every
// field of a reactor would read as racy, its mutexes included (constructed on one thread,
// first locked on another). So a reactor calls HappensBefore(reactor) just before it hands
// itself to gRPC and HappensAfter(reactor) first thing in each reaction, telling
// ThreadSanitizer what gRPC's API promises. Both compile to nothing without ThreadSanitizer.
// The edges are keyed on the reactor alone, so they can order a stream's read and write
// reactions, which gRPC may run at once: a race between those two may go unseen in a run.
// Used by the monitor's reactors and the trainer's reporter.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define GRADWATCH_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GRADWATCH_TSAN 1
#endif
#endif

#ifdef GRADWATCH_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace gradwatch {

// What this thread did so far happens before a later HappensAfter(key) on any thread.
inline void HappensBefore(const void* key) {
#ifdef GRADWATCH_TSAN
  __tsan_release(const_cast<void*>(key));
#else
  (void)key;
#endif
}

inline void HappensAfter(const void* key) {
#ifdef GRADWATCH_TSAN
  __tsan_acquire(const_cast<void*>(key));
#else
  (void)key;
#endif
}

}  // namespace gradwatch
