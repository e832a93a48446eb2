#include "tide/server/metrics.h"

#include <cstdio>
#include <sstream>

#include "tide/runtime/memory.h"

namespace tide::server::metrics {
namespace {

// Prometheus reads Go floats: integers as they are, others with enough digits to round-trip.
std::string number(double value) {
  char buffer[40];
  std::snprintf(buffer, sizeof(buffer), "%.17g", value);
  return buffer;
}

void family(std::ostringstream& out, const char* name, const char* type, const char* help) {
  out << "# HELP " << name << ' ' << help << '\n' << "# TYPE " << name << ' ' << type << '\n';
}

}  // namespace

Sample read(ApiContext& ctx) {
  Sample s;
  const ProgressSnapshot progress = ctx.queue.progress();
  s.waiting = static_cast<size_t>(progress.queued);
  s.running = progress.active;
  s.counters = ctx.queue.counters();
  s.resident_bytes = runtime::current_rss_bytes();
  s.models_loaded = ctx.registry.loaded_names().size();
  return s;
}

std::string prometheus_text(const Sample& s) {
  std::ostringstream out;
  family(out, "tide_queue_waiting", "gauge", "Jobs waiting in the queue behind the running one.");
  out << "tide_queue_waiting " << s.waiting << '\n';
  family(out, "tide_jobs_running", "gauge", "Jobs being computed now (one at most).");
  out << "tide_jobs_running " << (s.running ? 1 : 0) << '\n';
  family(out, "tide_jobs_total", "counter", "Jobs that ended, by how they ended (cancelled: while waiting or running).");
  out << "tide_jobs_total{status=\"done\"} " << s.counters.done << '\n';
  out << "tide_jobs_total{status=\"failed\"} " << s.counters.failed << '\n';
  out << "tide_jobs_total{status=\"cancelled\"} " << s.counters.cancelled << '\n';
  family(out, "tide_images_total", "counter", "Images generated.");
  out << "tide_images_total " << s.counters.images << '\n';
  family(out, "tide_steps_total", "counter", "Denoising steps computed.");
  out << "tide_steps_total " << s.counters.steps << '\n';
  family(out, "tide_step_seconds", "summary",
         "Seconds per denoising step (the UNet evaluations and the scheduler update of one step).");
  out << "tide_step_seconds_sum " << number(s.counters.step_seconds) << '\n';
  out << "tide_step_seconds_count " << s.counters.steps << '\n';
  family(out, "tide_resident_memory_bytes", "gauge", "Resident memory of the server process, in bytes.");
  out << "tide_resident_memory_bytes " << s.resident_bytes << '\n';
  family(out, "tide_models_loaded", "gauge", "Models loaded and kept warm.");
  out << "tide_models_loaded " << s.models_loaded << '\n';
  return out.str();
}

HttpReply scrape(ApiContext& ctx) {
  HttpReply r;
  r.body = prometheus_text(read(ctx));
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  return r;
}

}  // namespace tide::server::metrics
