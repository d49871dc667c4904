// What every process the jobs library spawns starts with.
#pragma once

#include <signal.h>
#include <spawn.h>

namespace gradwatch::jobs {

// `attr` initialised with an empty signal mask and default dispositions for SIGINT, SIGTERM,
// SIGPIPE and SIGHUP (the monitor blocks SIGINT and SIGTERM for sigwait; a child must not
// inherit that), plus `flags` (POSIX_SPAWN_SETSID ...). posix_spawnattr_destroy it after.
inline void InitSpawnAttributes(posix_spawnattr_t* attr, short flags) {
  posix_spawnattr_init(attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGPIPE, SIGHUP}) sigaddset(&defaults, s);
  posix_spawnattr_setsigmask(attr, &none);
  posix_spawnattr_setsigdefault(attr, &defaults);
  posix_spawnattr_setflags(attr, static_cast<short>(flags | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF));
}

}  // namespace gradwatch::jobs
