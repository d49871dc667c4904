// What the HTTP port answers: HandleHttp against a real hub and store, without civetweb
// (the transport is tested in http_server_test.cc).
#include "http_handlers.h"

#include <gtest/gtest.h>
#include <prometheus/collectable.h>
#include <prometheus/registry.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "auth.h"
#include "gradwatch/metrics/exporter.h"
#include "gradwatch/monitor/hub.h"
#include "gradwatch/store/store.h"

namespace gradwatch::monitor {
namespace {

using nlohmann::json;

class NullSink : public StreamSink {
 public:
  void Send(const v1::MonitorMessage&) override {}
};

std::filesystem::path TestDir() {
  auto dir = std::filesystem::temp_directory_path() /
             ("gradwatch-http-" + std::to_string(::getpid()) + "-" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// A hub and store holding run "run-1" with steps 1..5.
class HttpApi : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TestDir();
    store_ = std::make_unique<store::Store>(store::StoreOptions{(dir_ / "gradwatch.db").string()});
    hub_ = std::make_unique<Hub>(HubOptions{}, *store_, exporter_, clock_);
    v1::Hello hello;
    hello.set_run_id("run-1");
    hello.add_layer_names("head.weight");
    ASSERT_TRUE(hub_->OnHello(hello, sink_).ok());
    for (uint64_t i = 1; i <= 5; ++i) {
      v1::StepReport s;
      s.set_step(i);
      s.set_loss(0.5);
      s.set_grad_norm(0.2);
      s.add_layer_grad_norms(0.2f);
      hub_->OnStep("run-1", s, *sink_);
    }
    store_->Flush();
    std::ofstream(dir_ / "chart.min.js") << "// chart";
    context_.metrics = exporter_.registry();
    context_.hub = hub_.get();
    context_.store = store_.get();
    context_.chartjs = (dir_ / "chart.min.js").string();
  }
  void TearDown() override {
    store_->Flush();
    hub_.reset();
  }

  HttpResponse Get(const std::string& path, const std::string& query = "") {
    HttpRequest r;
    r.method = "GET";
    r.path = path;
    r.query = query;
    return HandleHttp(r, context_);
  }
  HttpRequest Post(const std::string& body) {
    HttpRequest r;
    r.method = "POST";
    r.path = "/api/v1/alerts/webhook";
    r.headers = {{"Host", "127.0.0.1:9464"}, {"Content-Type", "application/json"}};
    r.body = body;
    return r;
  }
  HttpResponse Webhook(const std::string& body) { return HandleHttp(Post(body), context_); }
  static std::string Error(const HttpResponse& r) {
    json j = json::parse(r.body, nullptr, false);
    return j.is_object() && j.contains("error") ? j["error"].get<std::string>() : "(no error: " + r.body + ")";
  }
  size_t Alerts() {
    store_->Flush();
    return store_->ListEvents("run-1").size();
  }

  std::filesystem::path dir_;
  FakeClock clock_;
  metrics::Exporter exporter_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<Hub> hub_;
  std::shared_ptr<NullSink> sink_ = std::make_shared<NullSink>();
  HttpContext context_;
};

TEST_F(HttpApi, answers_400_for_a_non_numeric_after) {
  HttpResponse r = Get("/api/v1/runs/run-1/steps", "after=abc");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Error(r), "query parameter \"after\" must be a step number 0..9223372036854775807, got \"abc\"");
  EXPECT_EQ(r.content_type, "application/json");
}

TEST_F(HttpApi, answers_400_for_an_after_beyond_the_largest_step) {
  for (const char* after : {"99999999999999999999999", "9223372036854775808", "-1", "+1", "1e3", "", "1 "}) {
    HttpResponse r = Get("/api/v1/runs/run-1/steps", std::string("after=") + after);
    EXPECT_EQ(r.status, 400) << after;
    EXPECT_NE(Error(r).find("\"after\""), std::string::npos) << Error(r);
  }
  EXPECT_EQ(Get("/api/v1/runs/run-1/steps", "after=9223372036854775807").status, 200);
}

TEST_F(HttpApi, serves_the_steps_after_the_given_one) {
  HttpResponse r = Get("/api/v1/runs/run-1/steps", "after=3");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  ASSERT_EQ(j["steps"].size(), 2u);
  EXPECT_EQ(j["steps"][0][0], 4);
  EXPECT_EQ(j["run"]["run_id"], "run-1");
}

TEST_F(HttpApi, answers_404_for_the_steps_of_an_unknown_run) {
  HttpResponse r = Get("/api/v1/runs/nosuch/steps");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(Error(r), "no run \"nosuch\"");
}

TEST_F(HttpApi, answers_400_naming_an_alert_that_is_not_an_object) {
  HttpResponse r = Webhook(R"({"alerts":[1]})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Error(r), "webhook body: alerts[0] must be an object, got number");
}

TEST_F(HttpApi, answers_400_naming_labels_that_are_not_an_object) {
  HttpResponse r = Webhook(R"({"alerts":[{"labels":{"run_id":"run-1"}},{"labels":"x"}]})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Error(r), "webhook body: alerts[1].labels must be an object, got string");
  EXPECT_EQ(Alerts(), 0u) << "a payload with a bad alert records none of its alerts";
}

TEST_F(HttpApi, answers_400_for_a_numeric_run_id) {
  HttpResponse r = Webhook(R"({"alerts":[{"labels":{"run_id":7}}]})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Error(r), "webhook body: alerts[0].labels.run_id must be a string, got number");
}

TEST_F(HttpApi, answers_400_with_the_position_for_a_body_that_is_not_json) {
  HttpResponse r = Webhook("{\"alerts\": [tru]}");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(Error(r).find("line 1, column"), std::string::npos) << Error(r);
  EXPECT_EQ(Webhook(R"({"alerts":{}})").status, 400);
  EXPECT_EQ(Error(Webhook("[]")), "webhook body is a JSON array; expected an Alertmanager webhook payload: "
                                  "a JSON object with an \"alerts\" array");
}

TEST_F(HttpApi, records_an_alertmanager_v4_payload_as_run_events) {
  HttpResponse r = Webhook(R"({"version":"4","groupKey":"{}:{alertname=\"GradwatchGradExplosion\"}",
    "status":"firing","receiver":"gradwatch","groupLabels":{},"commonLabels":{},"commonAnnotations":{},
    "externalURL":"http://alertmanager:9093","truncatedAlerts":0,
    "alerts":[{"status":"firing","labels":{"alertname":"GradwatchGradExplosion","run_id":"run-1","severity":"critical"},
               "annotations":{"summary":"grad norm 40x its median"},"startsAt":"2024-01-01T00:00:00Z",
               "endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph","fingerprint":"abc"},
              {"status":"firing","labels":{"alertname":"GradwatchDown"},"annotations":null}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body), json({{"recorded", 1}, {"ignored", 1}}));
  auto events = (store_->Flush(), store_->ListEvents("run-1"));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].message(), "Alertmanager: GradwatchGradExplosion firing: grad norm 40x its median");
}

TEST_F(HttpApi, refuses_a_post_that_is_not_json_typed) {
  for (const char* type : {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"}) {
    HttpRequest post = Post(R"({"alerts":[]})");
    post.headers[1].second = type;
    HttpResponse r = HandleHttp(post, context_);
    EXPECT_EQ(r.status, 415) << type;
    EXPECT_NE(Error(r).find("Content-Type: application/json"), std::string::npos) << Error(r);
  }
  HttpRequest untyped = Post(R"({"alerts":[]})");
  untyped.headers.pop_back();
  EXPECT_EQ(HandleHttp(untyped, context_).status, 415);
  HttpRequest charset = Post(R"({"alerts":[]})");
  charset.headers[1].second = "Application/JSON; charset=utf-8";
  EXPECT_EQ(HandleHttp(charset, context_).status, 200);
}

TEST_F(HttpApi, refuses_a_post_from_another_origin) {
  HttpRequest post = Post(R"({"alerts":[{"labels":{"run_id":"run-1"}}]})");
  post.headers.emplace_back("Origin", "http://evil.example");
  HttpResponse r = HandleHttp(post, context_);
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(Error(r).find("\"http://evil.example\""), std::string::npos) << Error(r);
  post.headers.back().second = "null";
  EXPECT_EQ(HandleHttp(post, context_).status, 403);
  post.headers.back().second = "https://127.0.0.1:9464";  // same host, other scheme
  EXPECT_EQ(HandleHttp(post, context_).status, 403);
  post.headers[0].second = "rebound.example:9464";  // DNS rebinding: same-origin with itself
  post.headers.back().second = "http://rebound.example:9464";
  EXPECT_EQ(HandleHttp(post, context_).status, 403);
  EXPECT_EQ(Alerts(), 0u);
}

TEST_F(HttpApi, accepts_a_post_from_its_own_origin) {
  HttpRequest post = Post(R"({"alerts":[{"labels":{"run_id":"run-1"}}]})");
  post.headers.emplace_back("Origin", "http://127.0.0.1:9464");
  EXPECT_EQ(HandleHttp(post, context_).status, 200);
  post.tls = true;
  post.headers.back().second = "https://127.0.0.1:9464";
  EXPECT_EQ(HandleHttp(post, context_).status, 200);
  post.headers[0].second = "localhost:9464";
  post.headers.back().second = "https://localhost:9464";
  EXPECT_EQ(HandleHttp(post, context_).status, 200);
  EXPECT_EQ(Alerts(), 3u);
}

TEST_F(HttpApi, refuses_a_body_over_one_mebibyte) {
  EXPECT_FALSE(RefuseBodyLength(-1));
  EXPECT_FALSE(RefuseBodyLength(kMaxHttpBodyBytes));
  auto refused = RefuseBodyLength(kMaxHttpBodyBytes + 1);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 413);
  EXPECT_NE(Error(*refused).find("1048577 bytes"), std::string::npos) << Error(*refused);
  EXPECT_EQ(Webhook(std::string(kMaxHttpBodyBytes + 1, ' ')).status, 413);
}

TEST_F(HttpApi, answers_404_with_a_link_home_for_an_unknown_run_page) {
  HttpResponse r = Get("/runs/nosuch");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.content_type, "text/html; charset=utf-8");
  EXPECT_NE(r.body.find("There is no run <code>nosuch</code>"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("<a href=\"/\">"), std::string::npos) << r.body;
  HttpResponse hostile = Get("/runs/<script>alert(1)</script>", "token=a\"b");
  EXPECT_EQ(hostile.body.find("<script>"), std::string::npos) << hostile.body;
  EXPECT_NE(hostile.body.find("href=\"/?token=a%22b\""), std::string::npos) << hostile.body;
  EXPECT_EQ(Get("/runs/run-1").status, 200);
}

TEST_F(HttpApi, routes_the_pages_metrics_and_chartjs) {
  EXPECT_EQ(Get("/").status, 200);
  HttpResponse metrics = Get("/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("gradwatch_"), std::string::npos);
  EXPECT_EQ(Get("/static/chart.min.js").body, "// chart");
  EXPECT_EQ(json::parse(Get("/api/v1/runs").body)["runs"][0]["run_id"], "run-1");
  EXPECT_EQ(Get("/nothing").status, 404);
  EXPECT_EQ(Get("/api/v1/runs/run-1/other").status, 404);
  HttpResponse wrong = Get("/api/v1/alerts/webhook");
  EXPECT_EQ(wrong.status, 405);
  ASSERT_EQ(wrong.headers.size(), 1u);
  EXPECT_EQ(wrong.headers[0], std::make_pair(std::string("Allow"), std::string("POST")));
  context_.chartjs = (dir_ / "missing.js").string();
  EXPECT_EQ(Get("/static/chart.min.js").status, 404);
}

TEST_F(HttpApi, serves_per_layer_norms_and_layer_names_only_when_asked) {
  json plain = json::parse(Get("/api/v1/runs/run-1/steps").body);
  EXPECT_TRUE(plain["steps"][0][7].is_null()) << plain["steps"][0];
  json layers = json::parse(Get("/api/v1/runs/run-1/steps", "layers=1&after=4").body);
  ASSERT_EQ(layers["steps"].size(), 1u);
  EXPECT_NEAR(layers["steps"][0][7][0].get<double>(), 0.2, 1e-6);
  EXPECT_EQ(layers["run"]["layer_names"], json::array({"head.weight"}));
  HttpResponse bad = Get("/api/v1/runs/run-1/steps", "layers=yes");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(Error(bad), "query parameter \"layers\" must be 0 or 1, got \"yes\"");
}

TEST_F(HttpApi, serves_the_compare_page_for_known_runs) {
  v1::Hello hello;
  hello.set_run_id("run-2");
  ASSERT_TRUE(hub_->OnHello(hello, sink_).ok());
  HttpResponse r = Get("/compare", "runs=run-1,run-2");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type, "text/html; charset=utf-8");
  EXPECT_NE(r.body.find("/static/compare.js"), std::string::npos);
  EXPECT_EQ(Get("/compare", "runs=run-1").status, 200);
}

TEST_F(HttpApi, refuses_a_compare_of_missing_malformed_repeated_or_too_many_runs) {
  struct Case {
    const char* query;
    int status;
    const char* says;
  };
  for (const Case& c : {Case{"", 400, "/compare?runs=RUN,RUN"}, Case{"runs=", 400, "/compare?runs=RUN,RUN"},
                        Case{"runs=run-1,,run-1", 400, "<code>&quot;&quot;</code> is not a run id"},
                        Case{"runs=run-1,a%2Fb", 400, "<code>&quot;a/b&quot;</code> is not a run id"},
                        Case{"runs=%3Cscript%3E", 400, "&quot;&lt;script&gt;&quot;"},
                        Case{"runs=..", 400, "is not a run id"},
                        Case{"runs=run-1,run-1", 400, "Run <code>run-1</code> is named twice"},
                        Case{"runs=a,b,c,d,e,f,g,h,i", 400, "at most 8 runs; 9 were asked for"},
                        Case{"runs=run-1,nosuch", 404, "There is no run <code>nosuch</code>"}}) {
    HttpResponse r = Get("/compare", c.query);
    EXPECT_EQ(r.status, c.status) << c.query;
    EXPECT_EQ(r.content_type, "text/html; charset=utf-8") << c.query;
    EXPECT_NE(r.body.find(c.says), std::string::npos) << c.query << ": " << r.body;
    EXPECT_EQ(r.body.find("<script"), std::string::npos) << c.query << ": " << r.body;
  }
  HttpResponse huge = Get("/compare", "runs=" + std::string(100000, 'x') + "&token=t%22");
  EXPECT_EQ(huge.status, 400);
  EXPECT_LT(huge.body.size(), 1000u) << "the message quotes at most 64 bytes of the input";
  EXPECT_NE(huge.body.find("href=\"/?token=t%22\""), std::string::npos) << huge.body;
  EXPECT_EQ(Get("/compare/x", "runs=run-1").status, 404);
}

TEST_F(HttpApi, serves_the_page_scripts_and_vendored_plugins) {
  for (const char* path : {"/static/charts.js", "/static/run.js", "/static/compare.js", "/static/hammer.min.js",
                           "/static/chartjs-plugin-zoom.min.js", "/static/chartjs-plugin-annotation.min.js"}) {
    HttpResponse r = Get(path);
    EXPECT_EQ(r.status, 200) << path;
    EXPECT_EQ(r.content_type, "application/javascript") << path;
    EXPECT_GT(r.body.size(), 1000u) << path;
  }
  EXPECT_EQ(Get("/static/pages.css").content_type, "text/css");
  EXPECT_NE(Get("/static/chartjs-plugin-zoom.min.js").body.find("chartjs-plugin-zoom v1.2.1"), std::string::npos);
  EXPECT_NE(Get("/static/chartjs-plugin-annotation.min.js").body.find("Released under the MIT License"),
            std::string::npos);
  for (const char* path : {"/static/", "/static/nothing.js", "/static/../run.js", "/static/run.js/"}) {
    EXPECT_EQ(Get(path).status, 404) << path;
  }
  HttpResponse page = Get("/runs/run-1");
  for (const char* script : {"/static/chart.min.js", "/static/chartjs-plugin-zoom.min.js", "/static/run.js"}) {
    EXPECT_NE(page.body.find(script), std::string::npos) << script;
  }
}

// A metrics source that fails the way a broken handler would.
class ThrowingMetrics : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override { throw std::logic_error("collector broke"); }
};

TEST_F(HttpApi, answers_500_and_logs_once_when_a_handler_throws) {
  context_.metrics = std::make_shared<ThrowingMetrics>();
  ::testing::internal::CaptureStderr();
  HttpResponse r = Get("/metrics");
  std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(log, "gradwatchd: HTTP \"GET\" \"/metrics\" failed: collector broke\n");
  EXPECT_EQ(Get("/api/v1/runs").status, 200) << "the next request is served";
}

TEST_F(HttpApi, checks_tokens_on_metrics_and_the_api_but_not_the_pages) {
  std::ofstream(dir_ / "tokens.json") << R"({"tokens":[{"token":"viewer-0123456789abcdef","role":"viewer"},
                                                     {"token":"operator-0123456789abcdef","role":"operator"}]})";
  Auth auth = Auth::Load((dir_ / "tokens.json").string());
  context_.auth = &auth;
  HttpResponse anonymous = Get("/metrics");
  EXPECT_EQ(anonymous.status, 401);
  ASSERT_FALSE(anonymous.headers.empty());
  EXPECT_EQ(anonymous.headers[0].first, "WWW-Authenticate");
  EXPECT_EQ(Get("/api/v1/runs", "token=viewer-0123456789abcdef").status, 200);
  EXPECT_EQ(Get("/").status, 200);
  HttpRequest post = Post(R"({"alerts":[]})");
  post.headers.emplace_back("Authorization", "Bearer viewer-0123456789abcdef");
  EXPECT_EQ(HandleHttp(post, context_).status, 403);
  post.headers.back().second = "Bearer operator-0123456789abcdef";
  EXPECT_EQ(HandleHttp(post, context_).status, 200);
}

TEST(HttpQuery, decodes_a_parameter_and_tells_absent_from_empty) {
  EXPECT_EQ(QueryParam("a=1&token=x%2By+z&b", "token"), "x+y z");
  EXPECT_EQ(QueryParam("a=1&b", "b"), "");
  EXPECT_FALSE(QueryParam("a=1", "b"));
  EXPECT_EQ(QueryParam("bad=%zz%4", "bad"), "%zz%4");
}

}  // namespace
}  // namespace gradwatch::monitor
