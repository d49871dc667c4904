// The ranks of one data-parallel job and the few collectives gradwatch's Session needs, on
// LibTorch's c10d: Gloo for CPU tensors; NCCL for CUDA tensors when LibTorch has CUDA and
// NCCL's headers were found at build time (GRADWATCH_TORCH_NCCL), else Gloo for those too.
// c10d stays inside group.cc: this header has only ATen's Tensor. NCCL wants a GPU of its own
// for each rank of a host (gradwatch-train gives rank LOCAL_RANK the device LOCAL_RANK).
//
//   DistEnv env = ReadDistEnv();                      // dist_env.h: torchrun's or Slurm's variables
//   std::shared_ptr<Group> group = Group::Join(env);  // rank 0 hosts the rendezvous store
//   SessionOptions o; o.group = group;                // the Session averages the gradients
//
// Every rank must call the same collectives in the same order. Each blocks until it is done on
// this rank. Thread-safety: one thread per Group (the training thread).
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "gradwatch/torch/dist_env.h"

namespace gradwatch::torchmon {

// Where the ranks of a job meet to form the group: opaque, a c10d store inside.
class GroupStore;

struct GroupOptions {
  std::string device = "cpu";  // the device of the tensors the collectives take: "cpu", "cuda", "cuda:N"
  // A collective or the rendezvous that waits longer for the other ranks throws (as
  // LibTorch's default: 30 minutes). Hangs are the monitor's to see first (heartbeats).
  std::chrono::milliseconds timeout = std::chrono::minutes(30);
};

class Group {
 public:
  // Whether this build can form a group of more than one rank: false when LibTorch's Gloo
  // headers were missing at build time (Debian: libgloo-dev).
  static bool Available();

  // Joins the job `env` describes: rank 0 hosts a TCP store at master_addr:master_port, the
  // others connect to it; returns once all world_size ranks are in. The transport binds the
  // interface named by GLOO_SOCKET_IFNAME when set, loopback for a master on 127.0.0.1 or
  // localhost, else the address this host's name resolves to. Throws std::runtime_error naming
  // the address on a failed or timed-out rendezvous, or when !Available().
  static std::shared_ptr<Group> Join(const DistEnv& env, const GroupOptions& options = {});

  // For tests and benchmarks: ranks as threads of one process, meeting in one in-memory store.
  static std::shared_ptr<GroupStore> InProcessStore();
  static std::shared_ptr<Group> Join(const std::shared_ptr<GroupStore>& store, int rank, int size,
                                     const GroupOptions& options = {});

  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  int rank() const;
  int size() const;
  const char* backend() const;  // "gloo" or "nccl"

  // Collectives. Each throws (c10::Error, a std::exception) when a peer is gone or the
  // timeout passes: the job cannot go on consistently, so the trainer ends.
  void AllReduceSum(at::Tensor& tensor);              // in place, every rank gets the sum
  void Broadcast(at::Tensor& tensor, int root = 0);   // in place, every rank gets root's
  // Root's tensors, coalesced into one buffer, broadcast once, copied back; same shapes and
  // dtype on every rank.
  void Broadcast(const std::vector<at::Tensor>& tensors, int root = 0);
  // Root's bytes, of any length: the length (one 8-byte broadcast), then the bytes only when
  // there are any.
  void Broadcast(std::string* bytes, int root = 0);
  void Barrier();

 private:
  struct Impl;
  explicit Group(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A fingerprint of a model's parameters, for checking that ranks hold the same ones.
struct ParamChecksum {
  double sum = 0;     // every value as float64, added tensor after tensor
  uint64_t hash = 0;  // FNV-1a 64 over every tensor's bytes (on the CPU, contiguous), in order
};
ParamChecksum ChecksumOf(const std::vector<at::Tensor>& tensors);

}  // namespace gradwatch::torchmon
