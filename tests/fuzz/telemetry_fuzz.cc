// libFuzzer target: the monitor's handling of trainer messages. Any bytes are parsed as a
// TrainerMessage and fed to a hub (with a real store in a temp folder) the way a stream
// would: hellos, steps, evals and command acks, valid or not. Bad input must be refused
// in-band or ignored, never crash the monitor.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

#include "monitor_world.h"

namespace {

using namespace gradwatch;

struct World : fuzz::MonitorWorld {
  World() : MonitorWorld("fuzz") {}
  std::string run_id;  // of the last accepted hello
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = new World();  // one monitor for the whole run, as in production
  v1::TrainerMessage m;
  if (!m.ParseFromArray(data, static_cast<int>(size))) return 0;
  if (m.has_hello()) {
    if (world->hub->OnHello(m.hello(), world->sink).ok()) world->run_id = m.hello().run_id();
  } else if (world->run_id.empty()) {
    return 0;  // the stream refuses anything before a hello
  } else if (m.has_step()) {
    world->hub->OnStep(world->run_id, m.step(), *world->sink);
  } else if (m.has_eval()) {
    world->hub->OnEval(world->run_id, m.eval(), *world->sink);
  } else if (m.has_command_ack()) {
    world->hub->OnCommandAck(world->run_id, m.command_ack());
  }
  world->clock.Advance(10);
  world->hub->Tick();
  return 0;
}
