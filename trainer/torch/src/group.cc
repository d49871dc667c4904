#include "gradwatch/torch/group.h"

#include <torch/torch.h>

#include <cstring>
#include <stdexcept>

// LibTorch's c10d headers compile their backends only under these macros, which its CMake
// config does not export; the library itself was built with them (Debian's exports
// c10d::ProcessGroupGloo). Gloo's headers come separately (Debian: libgloo-dev).
#if __has_include(<gloo/config.h>) && __has_include(<torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>)
#define USE_C10D_GLOO 1
#define GRADWATCH_TORCH_GLOO 1
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
// NCCL: a CUDA LibTorch (GRADWATCH_TORCH_CUDA) with NCCL's header. Not compiled on Debian's
// CPU-only LibTorch; there a CUDA device would get Gloo.
#if defined(GRADWATCH_TORCH_GLOO) && defined(GRADWATCH_TORCH_CUDA) && __has_include(<nccl.h>) && \
    __has_include(<torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>)
#define USE_C10D_NCCL 1
#define GRADWATCH_TORCH_NCCL 1
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace gradwatch::torchmon {
namespace {

// The two collectives behind one interface: c10d's backends derive from ProcessGroup in
// LibTorch 1.x and from Backend in 2.x, so each is held by its own type.
struct Collectives {
  virtual ~Collectives() = default;
  virtual void AllReduceSum(std::vector<at::Tensor>& tensors) = 0;
  virtual void Broadcast(std::vector<at::Tensor>& tensors, int root) = 0;
  virtual void Barrier() = 0;
};

#ifdef GRADWATCH_TORCH_GLOO
template <typename Backend>
struct CollectivesOf final : Collectives {
  explicit CollectivesOf(c10::intrusive_ptr<Backend> b) : backend(std::move(b)) {}
  void AllReduceSum(std::vector<at::Tensor>& tensors) override {
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    backend->allreduce(tensors, o)->wait();
  }
  void Broadcast(std::vector<at::Tensor>& tensors, int root) override {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    backend->broadcast(tensors, o)->wait();
  }
  void Barrier() override { backend->barrier()->wait(); }
  c10::intrusive_ptr<Backend> backend;
};

bool Loopback(const std::string& host) { return host == "localhost" || host.rfind("127.", 0) == 0; }

std::shared_ptr<::gloo::transport::Device> GlooDevice(const std::string& master) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  }
  if (master.empty() || Loopback(master)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}
#endif

}  // namespace

class GroupStore {
 public:
#ifdef GRADWATCH_TORCH_GLOO
  explicit GroupStore(c10::intrusive_ptr<c10d::Store> s) : store(std::move(s)) {}
  c10::intrusive_ptr<c10d::Store> store;
#endif
  std::string master;  // host of the store, "" in-process
};

struct Group::Impl {
  int rank = 0, size = 1;
  const char* backend = "gloo";
  at::Device device{at::kCPU};
  std::shared_ptr<GroupStore> store;  // kept alive: rank 0's TCP store serves the others
  std::unique_ptr<Collectives> collectives;
};

bool Group::Available() {
#ifdef GRADWATCH_TORCH_GLOO
  return true;
#else
  return false;
#endif
}

std::shared_ptr<GroupStore> Group::InProcessStore() {
#ifdef GRADWATCH_TORCH_GLOO
  return std::make_shared<GroupStore>(c10::make_intrusive<c10d::HashStore>());
#else
  throw std::runtime_error("data parallel: this build has no Gloo (install libgloo-dev and rebuild)");
#endif
}

std::shared_ptr<Group> Group::Join(const DistEnv& env, const GroupOptions& options) {
#ifdef GRADWATCH_TORCH_GLOO
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
  c10d::TCPStoreOptions so;
  so.port = env.master_port;
  so.isServer = env.rank == 0;
  so.numWorkers = static_cast<size_t>(env.world_size);
  so.waitWorkers = true;
  so.timeout = options.timeout;
  std::shared_ptr<GroupStore> store;
  try {
    store = std::make_shared<GroupStore>(c10::make_intrusive<c10d::TCPStore>(env.master_addr, so));
  } catch (const std::exception& e) {
    throw std::runtime_error("data parallel: rank " + std::to_string(env.rank) + " of " +
                             std::to_string(env.world_size) + " cannot meet the others at " + where +
                             (env.rank == 0 ? " (hosting the store)" : "") + ": " + e.what());
  }
  store->master = env.master_addr;
  return Join(store, env.rank, env.world_size, options);
#else
  (void)env;
  (void)options;
  return Join(nullptr, 0, 0, {});
#endif
}

std::shared_ptr<Group> Group::Join(const std::shared_ptr<GroupStore>& store, int rank, int size,
                                   const GroupOptions& options) {
#ifdef GRADWATCH_TORCH_GLOO
  if (size < 1 || rank < 0 || rank >= size) {
    throw std::invalid_argument("data parallel: rank " + std::to_string(rank) + " of " + std::to_string(size));
  }
  auto impl = std::make_unique<Impl>();
  impl->rank = rank;
  impl->size = size;
  impl->device = at::Device(options.device);
  impl->store = store;
#ifdef GRADWATCH_TORCH_NCCL
  if (impl->device.is_cuda()) {
    auto o = c10d::ProcessGroupNCCL::Options::create();
    o->timeout = options.timeout;
    impl->backend = "nccl";
    impl->collectives = std::make_unique<CollectivesOf<c10d::ProcessGroupNCCL>>(
        c10::make_intrusive<c10d::ProcessGroupNCCL>(store->store, rank, size, o));
    return std::shared_ptr<Group>(new Group(std::move(impl)));
  }
#endif
  auto o = c10d::ProcessGroupGloo::Options::create(options.timeout);
  o->devices.push_back(GlooDevice(store->master));
  impl->collectives = std::make_unique<CollectivesOf<c10d::ProcessGroupGloo>>(
      c10::make_intrusive<c10d::ProcessGroupGloo>(store->store, rank, size, o));
  return std::shared_ptr<Group>(new Group(std::move(impl)));
#else
  (void)store;
  (void)rank;
  (void)size;
  (void)options;
  throw std::runtime_error("data parallel: this build has no Gloo (install libgloo-dev and rebuild)");
#endif
}

Group::Group(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Group::~Group() = default;

int Group::rank() const { return impl_->rank; }
int Group::size() const { return impl_->size; }
const char* Group::backend() const { return impl_->backend; }

void Group::AllReduceSum(at::Tensor& tensor) {
  std::vector<at::Tensor> t{tensor};
  impl_->collectives->AllReduceSum(t);
}

void Group::Broadcast(at::Tensor& tensor, int root) {
  std::vector<at::Tensor> t{tensor};
  impl_->collectives->Broadcast(t, root);
}

void Group::Broadcast(const std::vector<at::Tensor>& tensors, int root) {
  if (tensors.empty()) return;
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> flat;
  for (const auto& t : tensors) flat.push_back(t.detach().reshape(-1));
  at::Tensor buffer = at::cat(flat);
  Broadcast(buffer, root);
  int64_t offset = 0;
  for (const auto& t : tensors) {
    t.detach().copy_(buffer.narrow(0, offset, t.numel()).view_as(t));
    offset += t.numel();
  }
}

void Group::Broadcast(std::string* bytes, int root) {
  const auto on = at::TensorOptions().device(impl_->device);
  at::Tensor length = at::full({1}, static_cast<int64_t>(bytes->size()), on.dtype(at::kLong));
  Broadcast(length, root);
  const int64_t n = length.item<int64_t>();
  if (impl_->rank != root) bytes->resize(static_cast<size_t>(n));
  if (n == 0) return;
  at::Tensor payload = at::empty({n}, on.dtype(at::kByte));
  if (impl_->rank == root) {
    payload.copy_(at::from_blob(bytes->data(), {n}, at::TensorOptions().dtype(at::kByte)));
  }
  Broadcast(payload, root);
  at::Tensor host = payload.cpu();
  std::memcpy(bytes->data(), host.data_ptr<uint8_t>(), static_cast<size_t>(n));
}

void Group::Barrier() { impl_->collectives->Barrier(); }

ParamChecksum ChecksumOf(const std::vector<at::Tensor>& tensors) {
  ParamChecksum out;
  out.hash = 14695981039346656037ull;  // FNV-1a 64 offset basis
  for (const auto& t : tensors) {
    at::Tensor host = t.detach().cpu().contiguous();
    out.sum += host.to(at::kDouble).sum().item<double>();
    const auto* p = static_cast<const uint8_t*>(host.data_ptr());
    for (size_t i = 0; i < host.nbytes(); ++i) {
      out.hash ^= p[i];
      out.hash *= 1099511628211ull;  // FNV-1a 64 prime
    }
  }
  return out;
}

}  // namespace gradwatch::torchmon
