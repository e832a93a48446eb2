// GET /metrics: the queue, the jobs, the steps, memory and loaded models in Prometheus' text exposition format
// (version 0.0.4), for a Prometheus server to scrape. The counters are the job queue's (JobQueue::counters), so
// they count the jobs of every API.
#pragma once
#include <cstdint>
#include <string>

#include "tide/server/api_context.h"

namespace tide::server::metrics {

// One reading of everything /metrics shows.
struct Sample {
  size_t waiting = 0;  // jobs in the queue behind the running one
  bool running = false;
  JobCounters counters;
  int64_t resident_bytes = 0;
  size_t models_loaded = 0;
};

Sample read(ApiContext& ctx);
// Every metric with its # HELP and # TYPE lines.
std::string prometheus_text(const Sample& sample);
// text/plain; version=0.0.4
HttpReply scrape(ApiContext& ctx);

}  // namespace tide::server::metrics
