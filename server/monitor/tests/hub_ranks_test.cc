// The hub with a data-parallel run: one run, a stream per rank, rank 0 leading (its
// reports feed the detectors, commands go to it), every rank stored, acknowledged and
// watched on its own.
#include "hub_fixture.h"

namespace gradwatch::monitor {
namespace {

class HubRanksTest : public HubTest {
 protected:
  static constexpr uint32_t kWorld = 2;

  v1::Hello RankHello(const std::string& run_id, uint32_t rank, uint32_t world = kWorld) {
    v1::Hello h = Hello(run_id);
    h.set_rank(rank);
    h.set_world_size(world);
    h.set_trainer_instance(100 + rank);  // one process per rank
    h.set_host("node" + std::to_string(rank));
    (*h.mutable_config()->mutable_thresholds())["hang_min_seconds"] = 5;
    (*h.mutable_config()->mutable_thresholds())["rank_lost_seconds"] = 0;
    return h;
  }
  // Rank `rank`'s report of a step; rank 0's also carries every rank's values.
  v1::StepReport RankStep(uint64_t step, uint32_t rank, const std::vector<double>& local_norms,
                          const std::vector<double>& losses) {
    v1::StepReport s = Step(step, 0.2, losses[rank]);
    s.set_local_grad_norm(local_norms[rank]);
    if (rank == 0) {
      for (double v : losses) s.add_rank_losses(v);
      for (double v : local_norms) s.add_rank_grad_norms(v);
      for (size_t i = 0; i < losses.size(); ++i) s.add_rank_compute_seconds(0.05);
    }
    return s;
  }
  // Both ranks report steps [from, to] with healthy, slightly different values.
  void HealthyJob(const std::string& run, uint64_t from, uint64_t to, FakeSink& r0, FakeSink& r1) {
    for (uint64_t i = from; i <= to; ++i) {
      const double wiggle = 1 + 0.05 * (static_cast<int>((i * 7) % 5) - 2);
      std::vector<double> norms{0.2 * wiggle, 0.21 * wiggle}, losses{0.5, 0.52};
      hub_->OnStep(run, RankStep(i, 0, norms, losses), r0, 0);
      hub_->OnStep(run, RankStep(i, 1, norms, losses), r1, 1);
      clock_.Advance(100);
    }
  }
  uint64_t LastAck(FakeSink& sink) {
    auto acks = sink.Where([](const v1::MonitorMessage& m) { return m.has_ack(); });
    return acks.empty() ? 0 : acks.back().ack().stored_through_step();
  }
};

TEST_F(HubRanksTest, makes_one_run_of_every_ranks_stream_and_shows_each_rank) {
  auto r0 = std::make_shared<FakeSink>(), r1 = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 1), r1).ok());  // rank 1 may come first
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 0), r0).ok());
  HealthyJob("job", 1, 30, *r0, *r1);
  store_->Flush();
  std::optional<v1::Run> run = hub_->GetRun("job");
  ASSERT_TRUE(run);
  EXPECT_EQ(hub_->ListRuns().size(), 1u);
  EXPECT_EQ(run->world_size(), 2u);
  ASSERT_EQ(run->ranks_size(), 2);
  EXPECT_TRUE(run->ranks(1).connected());
  EXPECT_EQ(run->ranks(1).last_step(), 30u);
  EXPECT_EQ(run->ranks(1).host(), "node1");
  EXPECT_EQ(run->host(), "node0");  // the run's host is rank 0's
  EXPECT_DOUBLE_EQ(run->last_loss(), 0.51);  // the mean of the ranks' losses
  // Each rank's stream is acknowledged for its own steps.
  EXPECT_EQ(LastAck(*r0), 30u);
  EXPECT_EQ(LastAck(*r1), 30u);
  EXPECT_EQ(store_->ListRankSteps("job", 1, 0, 100).size(), 30u);
  EXPECT_EQ(store_->StepCount("job").first, 30u);
}

TEST_F(HubRanksTest, refuses_a_rank_outside_the_world_or_a_world_size_that_differs) {
  auto a = std::make_shared<FakeSink>(), b = std::make_shared<FakeSink>(), c = std::make_shared<FakeSink>();
  Status outside = hub_->OnHello(RankHello("job", 2), a);
  EXPECT_EQ(outside.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(outside.message().find("hello.rank 2 is not below hello.world_size 2"), std::string::npos)
      << outside.message();
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 0), a).ok());
  Status other_world = hub_->OnHello(RankHello("job", 1, 4), b);
  EXPECT_EQ(other_world.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(other_world.message().find("job of 2 rank(s)"), std::string::npos) << other_world.message();
  EXPECT_TRUE(hub_->OnHello(RankHello("job", 1), c).ok());
}

// Exactly once per rank: a rank's resent steps are not stored twice, and a rank's steps
// never count as another rank's.
TEST_F(HubRanksTest, deduplicates_each_ranks_steps_on_its_own) {
  auto r0 = std::make_shared<FakeSink>(), r1 = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 0), r0).ok());
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 1), r1).ok());
  HealthyJob("job", 1, 10, *r0, *r1);
  hub_->OnStreamClosed("job", r1.get(), /*clean=*/false, 1);
  auto again = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 1), again).ok());  // the same process reconnects
  std::vector<double> norms{0.2, 0.2}, losses{0.5, 0.5};
  for (uint64_t i = 5; i <= 12; ++i) hub_->OnStep("job", RankStep(i, 1, norms, losses), *again, 1);
  store_->Flush();
  EXPECT_EQ(store_->ListRankSteps("job", 1, 0, 100).size(), 12u);
  EXPECT_EQ(store_->StepCount("job").first, 10u);  // rank 0's steps are its own
  EXPECT_EQ(LastAck(*again), 12u);
  v1::Hello stranger = RankHello("job", 1);
  stranger.set_trainer_instance(7);
  EXPECT_EQ(hub_->OnHello(stranger, std::make_shared<FakeSink>()).code(), Status::Code::kFailedPrecondition);
}

// Commands go to rank 0, which hands them to the others; every rank's ack joins the record.
TEST_F(HubRanksTest, sends_commands_to_rank_zero_and_records_every_ranks_ack) {
  auto r0 = std::make_shared<FakeSink>(), r1 = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 0), r0).ok());
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 1), r1).ok());
  HealthyJob("job", 1, 10, *r0, *r1);
  v1::Command clip;
  clip.mutable_set_clipping()->set_kind(v1::Clipping::KIND_NORM);
  clip.mutable_set_clipping()->set_threshold(1.0);
  ASSERT_TRUE(hub_->SendCommand("job", clip, 0, nullptr).ok());
  auto sent = r0->Where([](const v1::MonitorMessage& m) { return m.has_command(); });
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_TRUE(r1->Where([](const v1::MonitorMessage& m) { return m.has_command(); }).empty());
  v1::CommandAck ack;
  ack.set_command_id(sent[0].command().id());
  ack.set_applied_at_step(11);
  ack.set_result(v1::CommandAck::RESULT_APPLIED);
  hub_->OnCommandAck("job", ack, 1);  // rank 1's may come first
  hub_->OnCommandAck("job", ack, 0);
  hub_->OnCommandAck("job", ack, 1);  // a repeat is not counted twice
  store_->Flush();
  auto records = hub_->ListCommands("job");
  ASSERT_EQ(records.size(), 1u);
  ASSERT_EQ(records[0].rank_acks_size(), 2);
  std::set<uint32_t> ranks;
  for (const auto& a : records[0].rank_acks()) {
    ranks.insert(a.rank());
    EXPECT_EQ(a.applied_at_step(), 11u);
  }
  EXPECT_EQ(ranks, (std::set<uint32_t>{0, 1}));
}

// A bad batch on rank 1: its local norm x1000 makes the averaged gradient explode; the
// explosion names rank 1 and the guard acts through rank 0.
TEST_F(HubRanksTest, names_the_rank_whose_batch_exploded_the_gradient) {
  auto r0 = std::make_shared<FakeSink>(), r1 = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 0), r0).ok());
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 1), r1).ok());
  HealthyJob("job", 1, 60, *r0, *r1);
  std::vector<double> norms{0.2, 200.0}, losses{0.5, 0.5};
  v1::StepReport bad = RankStep(61, 0, norms, losses);
  bad.set_grad_norm(100.1);  // the average of the two
  hub_->OnStep("job", bad, *r0, 0);
  hub_->OnStep("job", RankStep(61, 1, norms, losses), *r1, 1);
  store_->Flush();
  bool named = false;
  for (const auto& e : store_->ListEvents("job")) {
    if (e.step() == 61 && e.kind() == "grad_spike") named = e.has_rank() && e.rank() == 1;
  }
  EXPECT_TRUE(named);
  EXPECT_FALSE(r0->Where([](const v1::MonitorMessage& m) { return m.has_command(); }).empty());
  EXPECT_TRUE(r1->Where([](const v1::MonitorMessage& m) { return m.has_command(); }).empty());
}

// A job whose ranks all stay connected but stop stepping: the watch flags the hang from
// the timer and names the rank that is not waiting in the collective.
TEST_F(HubRanksTest, flags_a_hang_from_the_timer_naming_the_rank_outside_the_collective) {
  auto r0 = std::make_shared<FakeSink>(), r1 = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 0), r0).ok());
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 1), r1).ok());
  HealthyJob("job", 1, 20, *r0, *r1);
  hub_->Tick();
  v1::Heartbeat waiting, computing;
  waiting.set_step(21);
  waiting.set_phase(v1::Heartbeat::PHASE_COLLECTIVE);
  computing.set_step(21);
  computing.set_phase(v1::Heartbeat::PHASE_COMPUTE);
  for (int second = 0; second < 8; ++second) {
    clock_.Advance(1'000);
    hub_->OnHeartbeat("job", waiting, 0);
    hub_->OnHeartbeat("job", computing, 1);
    hub_->Tick();
  }
  store_->Flush();
  std::vector<v1::Event> hangs;
  for (const auto& e : store_->ListEvents("job")) {
    if (e.kind() == "hang") hangs.push_back(e);
  }
  ASSERT_EQ(hangs.size(), 1u);
  EXPECT_TRUE(hangs[0].has_rank());
  EXPECT_EQ(hangs[0].rank(), 1u);
  EXPECT_EQ(hub_->GetRun("job")->ranks(1).heartbeat().phase(), v1::Heartbeat::PHASE_COMPUTE);
}

// Rank 1's stream breaks while rank 0 still reports: the rank is lost, loudly, and the run
// runs on; it finishes when rank 0 says goodbye.
TEST_F(HubRanksTest, says_a_rank_was_lost_while_the_others_run_and_finishes_with_rank_zero) {
  auto r0 = std::make_shared<FakeSink>(), r1 = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 0), r0).ok());
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 1), r1).ok());
  HealthyJob("job", 1, 10, *r0, *r1);
  hub_->Tick();
  hub_->OnStreamClosed("job", r1.get(), /*clean=*/false, 1);
  EXPECT_EQ(hub_->GetRun("job")->state(), v1::RUN_STATE_RUNNING);
  EXPECT_FALSE(hub_->GetRun("job")->ranks(1).connected());
  clock_.Advance(1'000);
  hub_->Tick();
  store_->Flush();
  bool lost = false;
  for (const auto& e : store_->ListEvents("job")) lost = lost || (e.kind() == "rank_lost" && e.rank() == 1);
  EXPECT_TRUE(lost);
  hub_->OnStreamClosed("job", r0.get(), /*clean=*/true, 0);
  EXPECT_EQ(hub_->GetRun("job")->state(), v1::RUN_STATE_FINISHED);
}

TEST_F(HubRanksTest, refuses_gathered_values_that_are_not_one_per_rank) {
  auto r0 = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 0), r0).ok());
  v1::StepReport s = RankStep(1, 0, {0.2, 0.2}, {0.5, 0.5});
  s.add_rank_losses(0.5);  // three losses in a job of two ranks
  hub_->OnStep("job", s, *r0, 0);
  auto refused = r0->Where([](const v1::MonitorMessage& m) { return m.has_rejection(); });
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].rejection().reason(), "step 1 has 3 rank_losses, the run has 2 rank(s)");
  EXPECT_EQ(hub_->GetRun("job")->steps(), 0u);
}

TEST_F(HubRanksTest, takes_evals_from_rank_zero_only) {
  auto r0 = std::make_shared<FakeSink>(), r1 = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 0), r0).ok());
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 1), r1).ok());
  HealthyJob("job", 1, 5, *r0, *r1);
  v1::EvalReport eval;
  eval.set_step(5);
  eval.set_loss(0.4);
  hub_->OnEval("job", eval, *r1, 1);
  auto refused = r1->Where([](const v1::MonitorMessage& m) { return m.has_rejection(); });
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_NE(refused[0].rejection().reason().find("rank 0"), std::string::npos);
}

// After a monitor restart every rank resumes from what the store holds of it.
TEST_F(HubRanksTest, resumes_every_rank_from_the_store_after_a_restart) {
  auto r0 = std::make_shared<FakeSink>(), r1 = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 0), r0).ok());
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 1), r1).ok());
  HealthyJob("job", 1, 10, *r0, *r1);
  std::vector<double> norms{0.2, 0.2}, losses{0.5, 0.5};
  hub_->OnStep("job", RankStep(11, 1, norms, losses), *r1, 1);  // rank 1 ran ahead in reporting
  store_->Flush();
  Open();
  auto a0 = std::make_shared<FakeSink>(), a1 = std::make_shared<FakeSink>();
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 0), a0).ok());
  ASSERT_TRUE(hub_->OnHello(RankHello("job", 1), a1).ok());
  EXPECT_EQ(LastAck(*a0), 10u);
  EXPECT_EQ(LastAck(*a1), 11u);
}

}  // namespace
}  // namespace gradwatch::monitor
