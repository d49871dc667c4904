// ReadDistEnv: the job's layout from torchrun's or Slurm's variables, and an error naming the
// variable for every inconsistent environment.
#include "gradwatch/torch/dist_env.h"

#include <gtest/gtest.h>

#include <map>
#include <stdexcept>
#include <string>

namespace gradwatch::torchmon {
namespace {

DistEnv Read(const std::map<std::string, std::string>& vars) {
  return ReadDistEnv([&](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

std::string ErrorOf(const std::map<std::string, std::string>& vars) {
  try {
    Read(vars);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(DistEnv, no_launcher_variables_is_one_process) {
  DistEnv d = Read({{"HOME", "/root"}});
  EXPECT_EQ(d.rank, 0);
  EXPECT_EQ(d.world_size, 1);
  EXPECT_FALSE(d.distributed());
  EXPECT_EQ(d.source, "none");
}

TEST(DistEnv, reads_torchrun) {
  DistEnv d = Read({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"},
                    {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "29500"}});
  EXPECT_EQ(d.source, "torchrun");
  EXPECT_EQ(d.rank, 3);
  EXPECT_EQ(d.world_size, 4);
  EXPECT_EQ(d.local_rank, 1);
  EXPECT_EQ(d.master_addr, "node7");
  EXPECT_EQ(d.master_port, 29500);
  EXPECT_TRUE(d.distributed());
}

TEST(DistEnv, torchrun_wins_over_slurm_inside_an_allocation) {
  DistEnv d = Read({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "1"},
                    {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}});
  EXPECT_EQ(d.source, "torchrun");
  EXPECT_EQ(d.rank, 1);
}

TEST(DistEnv, a_single_torchrun_rank_needs_no_master) {
  DistEnv d = Read({{"RANK", "0"}, {"WORLD_SIZE", "1"}});
  EXPECT_EQ(d.world_size, 1);
  EXPECT_EQ(d.master_addr, "");
}

TEST(DistEnv, reads_slurm_with_the_master_from_the_node_list_and_the_job_id) {
  DistEnv d = Read({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"},
                    {"SLURM_JOB_NODELIST", "gpu[01-04]"}, {"SLURM_STEP_NODELIST", "gpu[02-03]"},
                    {"SLURM_JOB_ID", "123456"}});
  EXPECT_EQ(d.source, "slurm");
  EXPECT_EQ(d.rank, 5);
  EXPECT_EQ(d.world_size, 8);
  EXPECT_EQ(d.local_rank, 1);
  EXPECT_EQ(d.master_addr, "gpu02");  // the step's nodes, where the tasks run
  EXPECT_EQ(d.master_port, SlurmPort(123456));
  EXPECT_EQ(d.master_port, 10000 + 123456 % 20000);
}

TEST(DistEnv, slurm_takes_master_addr_and_port_when_set) {
  DistEnv d = Read({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_JOB_NODELIST", "n1"},
                    {"SLURM_JOB_ID", "9"}, {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "4242"}});
  EXPECT_EQ(d.master_addr, "10.0.0.1");
  EXPECT_EQ(d.master_port, 4242);
}

TEST(DistEnv, the_same_slurm_job_gives_every_task_the_same_rendezvous) {
  std::map<std::string, std::string> task = {{"SLURM_NTASKS", "2"}, {"SLURM_JOB_NODELIST", "c[7-8]"},
                                             {"SLURM_JOB_ID", "77"}};
  task["SLURM_PROCID"] = "0";
  DistEnv a = Read(task);
  task["SLURM_PROCID"] = "1";
  DistEnv b = Read(task);
  EXPECT_EQ(a.master_addr, b.master_addr);
  EXPECT_EQ(a.master_port, b.master_port);
  EXPECT_NE(SlurmPort(77), SlurmPort(78));
}

TEST(DistEnv, first_host_of_slurm_node_lists) {
  EXPECT_EQ(FirstSlurmHost("node7"), "node7");
  EXPECT_EQ(FirstSlurmHost("node7,node9"), "node7");
  EXPECT_EQ(FirstSlurmHost("gpu[01-04]"), "gpu01");
  EXPECT_EQ(FirstSlurmHost("a[3,5-7]-ib,b2"), "a3-ib");
  EXPECT_EQ(FirstSlurmHost("rack1-n[0010-0012],rack2-n[0001]"), "rack1-n0010");
  for (const char* bad : {"", "gpu[01-04", "gpu]", "[1-2]", "gpu[]", "gpu[a-b]", "g[1[2]]", ",n1"}) {
    EXPECT_THROW(FirstSlurmHost(bad), std::invalid_argument) << bad;
  }
}

TEST(DistEnv, errors_name_the_variable) {
  EXPECT_EQ(ErrorOf({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "1"}}),
            "RANK: 2 is not below WORLD_SIZE 2");
  EXPECT_EQ(ErrorOf({{"RANK", "x"}, {"WORLD_SIZE", "2"}}), "RANK: expected a non-negative integer, got \"x\"");
  EXPECT_EQ(ErrorOf({{"RANK", "-1"}, {"WORLD_SIZE", "2"}}), "RANK: expected a non-negative integer, got \"-1\"");
  EXPECT_EQ(ErrorOf({{"RANK", "0"}, {"WORLD_SIZE", "0"}}), "WORLD_SIZE: must be >= 1, got 0");
  EXPECT_EQ(ErrorOf({{"RANK", "0"}, {"WORLD_SIZE", "99999999"}}), "WORLD_SIZE: must be <= 65536, got 99999999");
  EXPECT_EQ(ErrorOf({{"RANK", "0"}}), "WORLD_SIZE: unset while RANK is set");
  EXPECT_EQ(ErrorOf({{"WORLD_SIZE", "2"}}), "RANK: unset while WORLD_SIZE is set");
  EXPECT_EQ(ErrorOf({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}}),
            "MASTER_ADDR: unset for a job of 2 ranks");
  EXPECT_EQ(ErrorOf({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}}),
            "MASTER_PORT: unset for a job of 2 ranks");
  EXPECT_EQ(ErrorOf({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "70000"}}),
            "MASTER_PORT: must be <= 65535, got 70000");
  EXPECT_EQ(ErrorOf({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "http"}}),
            "MASTER_PORT: expected a non-negative integer, got \"http\"");
  EXPECT_EQ(ErrorOf({{"SLURM_PROCID", "4"}, {"SLURM_NTASKS", "4"}}), "SLURM_PROCID: 4 is not below SLURM_NTASKS 4");
  EXPECT_EQ(ErrorOf({{"SLURM_PROCID", "0"}}), "SLURM_NTASKS: unset while SLURM_PROCID is set");
  EXPECT_EQ(ErrorOf({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_JOB_ID", "1"}}),
            "MASTER_ADDR: unset, and no SLURM_STEP_NODELIST or SLURM_JOB_NODELIST to take it from");
  EXPECT_EQ(ErrorOf({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_JOB_NODELIST", "n[1-"},
                     {"SLURM_JOB_ID", "1"}}),
            "SLURM_JOB_NODELIST: cannot read the node list \"n[1-\"");
  EXPECT_EQ(ErrorOf({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_JOB_NODELIST", "n1"}}),
            "MASTER_PORT: unset, and no SLURM_JOB_ID to derive it from");
}

}  // namespace
}  // namespace gradwatch::torchmon
