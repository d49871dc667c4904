// Happens-before edges that gRPC guarantees but ThreadSanitizer cannot see.
//
// gRPC orders everything a thread did before it starts an operation on a reactor
// (StartCall, StartRead, StartWrite, Finish, ...) before that operation's reaction, which often
// runs on another thread, and every reaction before OnDone. Debian's gRPC and abseil are
// not built with ThreadSanitizer, so the locks and atomics behind that ordering are
// invisible to it and every field of a reactor reads as racy, its own mutexes included
// (they are constructed on one thread and first locked on another). A reactor therefore
// calls HappensBefore(reactor) just before it hands itself to gRPC and HappensAfter(reactor)
// first thing in each reaction: exactly the ordering gRPC's API promises, no more.
// Without ThreadSanitizer both compile to nothing. A copy lives in trainer/reporter/src/ (the
// reporter does not link the monitor).
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

namespace gradwatch::monitor {

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

}  // namespace gradwatch::monitor
