// Where this process sits in a data-parallel job, read from the launcher's environment. No
// torch here: plain parsing, unit-tested on its own (dist_env_test).
//
//   torchrun:  RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
//   Slurm:     SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; MASTER_ADDR and MASTER_PORT when set,
//              else the first host of SLURM_STEP_NODELIST (or SLURM_JOB_NODELIST, SLURM_NODELIST)
//              and a port derived from SLURM_JOB_ID (SlurmPort)
//   neither:   a single process (rank 0 of 1)
// torchrun's variables win when both are set (torchrun started inside a Slurm allocation).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace gradwatch::torchmon {

struct DistEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;           // rank on this host: picks the CUDA device
  std::string master_addr;      // where rank 0 hosts the rendezvous store; "" for one process
  uint16_t master_port = 0;
  std::string source = "none";  // "torchrun", "slurm" or "none"

  bool distributed() const { return world_size > 1; }
};

// The most ranks a job may declare: far above what gradwatch has been run with, low enough
// that a typo (WORLD_SIZE=40000000) is refused before anything allocates per rank.
constexpr int kMaxWorldSize = 65'536;

// A variable's value, or nullptr when it is unset (std::getenv in production, a map in tests).
using EnvLookup = std::function<const char*(const char*)>;

// Reads the job's layout. Throws std::invalid_argument naming the variable on an inconsistent
// environment: a non-numeric or negative value ('RANK: expected a non-negative integer, got "x"'),
// WORLD_SIZE below 1 or above kMaxWorldSize, a rank not below the world size ('RANK: 2 is not
// below WORLD_SIZE 2'), RANK without WORLD_SIZE (or the reverse), a missing MASTER_ADDR or
// MASTER_PORT for more than one rank, a port outside 1..65535, or a Slurm node list it cannot read.
DistEnv ReadDistEnv(const EnvLookup& env);
// ReadDistEnv(std::getenv).
DistEnv ReadDistEnv();

// The first host of a Slurm node list: "node7" -> "node7", "gpu[01-04]" -> "gpu01",
// "a[3,5-7]-ib,b2" -> "a3-ib". Throws std::invalid_argument on an empty or malformed list.
std::string FirstSlurmHost(const std::string& nodelist);

// The rendezvous port of a Slurm job without MASTER_PORT: 10000 + job_id % 20000, the same on
// every task of the job and below Linux's ephemeral range (32768 on). Two job steps of one job
// running at once would meet on the same port: give those MASTER_PORT.
uint16_t SlurmPort(uint64_t job_id);

}  // namespace gradwatch::torchmon
