#include "tide/schedulers/scheduler.h"

#include <cmath>

#include "tide/runtime/error.h"
#include "tide/schedulers/common.h"
#include "tide/schedulers/multistep.h"

namespace tide::schedulers {

namespace {

struct Family {
  const char* name;
  const char* class_name;
  bool karras;  // diffusers' class has use_karras_sigmas
};

// CLI names in the order they are listed to users.
const Family kFamilies[] = {
    {"pndm", "PNDMScheduler", false},
    {"ddim", "DDIMScheduler", false},
    {"ddpm", "DDPMScheduler", false},
    {"euler", "EulerDiscreteScheduler", true},
    {"euler-a", "EulerAncestralDiscreteScheduler", false},
    {"lms", "LMSDiscreteScheduler", true},
    {"heun", "HeunDiscreteScheduler", true},
    {"dpm++2m", "DPMSolverMultistepScheduler", true},
    {"dpm++3m", "DPMSolverMultistepScheduler", true},
    {"unipc", "UniPCMultistepScheduler", true},
    {"lcm", "LCMScheduler", false},
    {"tcd", "TCDScheduler", false},
};

const Family* find_family(const std::string& name) {
  for (const auto& f : kFamilies)
    if (name == f.name) return &f;
  return nullptr;
}

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

std::string karras_names() {
  std::vector<std::string> names;
  for (const auto& f : kFamilies)
    if (f.karras) names.push_back(f.name);
  return joined(names);
}

// The view of `t` broadcastable against a tensor of `dims` dimensions: [B] -> [B, 1, ...].
at::Tensor unsqueeze_to(at::Tensor t, int64_t dims) {
  t = t.flatten();
  while (t.dim() < dims) t = t.unsqueeze(-1);
  return t;
}

}  // namespace

std::vector<std::string> scheduler_names() {
  std::vector<std::string> names;
  for (const auto& f : kFamilies) names.push_back(f.name);
  return names;
}

std::string scheduler_name_for_class(const std::string& class_name, const nlohmann::json& scheduler_config) {
  if (class_name == "DPMSolverMultistepScheduler") {
    const detail::Config config(scheduler_config, class_name);
    return config.get_int("solver_order", 2) == 3 ? "dpm++3m" : "dpm++2m";
  }
  for (const auto& f : kFamilies)
    if (class_name == f.class_name) return f.name;
  return "";
}

std::unique_ptr<Scheduler> make_scheduler(const std::string& requested, const nlohmann::json& scheduler_config,
                                          const SchedulerOptions& options) {
  if (!scheduler_config.is_object()) throw Error("scheduler config must be a JSON object");
  std::string name = requested;
  bool own_class = false;
  if (name.empty()) {
    auto it = scheduler_config.find("_class_name");
    if (it == scheduler_config.end() || !it->is_string())
      throw Error("the scheduler config has no _class_name; choose a scheduler: " + joined(scheduler_names()));
    const std::string class_name = it->get<std::string>();
    name = scheduler_name_for_class(class_name, scheduler_config);
    if (name.empty())
      throw Error("the model's scheduler " + class_name + " is not supported; choose one of: " +
                  joined(scheduler_names()));
    own_class = true;
  }
  const Family* family = find_family(name);
  if (!family) throw Error("unknown scheduler '" + name + "'; valid names: " + joined(scheduler_names()));
  if (options.karras && !family->karras)
    throw Error("the " + name + " scheduler (diffusers " + family->class_name +
                ") has no Karras sigmas; --karras works with: " + karras_names());
  if (!(options.eta >= 0)) throw Error("eta must be a non-negative number");
  if (options.eta != 0 && name != "ddim" && name != "tcd")
    throw Error("eta applies only to the ddim and tcd schedulers, not to " + name);
  const std::string& spacing = options.timestep_spacing;
  if (!spacing.empty() && spacing != "leading" && spacing != "trailing" && spacing != "linspace")
    throw Error("unknown timestep spacing '" + spacing + "'; valid: leading, trailing, linspace");
  if (!spacing.empty() && (name == "lcm" || name == "tcd"))
    throw Error("the " + name + " scheduler takes its timesteps from original_inference_steps; a timestep spacing "
                "does not apply to it");

  // Like <Scheduler>.from_config(config, **kwargs): kwargs override the config's keys.
  nlohmann::json merged = scheduler_config;
  if (options.karras) merged["use_karras_sigmas"] = true;
  if (!spacing.empty()) merged["timestep_spacing"] = spacing;
  if (family->class_name == std::string("DPMSolverMultistepScheduler") && !own_class) {
    merged["algorithm_type"] = "dpmsolver++";
    merged["solver_order"] = name == "dpm++3m" ? 3 : 2;
  }
  const detail::Config config(merged, family->class_name);

  if (name == "pndm") return detail::make_pndm(config);
  if (name == "ddim") return detail::make_ddim(config, options.eta);
  if (name == "ddpm") return detail::make_ddpm(config);
  if (name == "euler") return detail::make_euler(config);
  if (name == "euler-a") return detail::make_euler_ancestral(config);
  if (name == "lms") return detail::make_lms(config);
  if (name == "heun") return detail::make_heun(config);
  if (name == "unipc") return detail::make_unipc(config);
  if (name == "lcm") return detail::make_lcm(config);
  if (name == "tcd") return detail::make_tcd(config, options.eta);
  return detail::make_dpm_solver(config, name);
}

// ---------------------------------------------------------------- Scheduler

std::vector<double> Scheduler::sigmas() const {
  return sigmas_.defined() ? detail::tensor_values(sigmas_) : std::vector<double>{};
}

at::Tensor Scheduler::scale_model_input(const at::Tensor& sample, double) { return sample; }

int Scheduler::index_for_timestep(double timestep) const {
  std::vector<int> found;
  for (size_t i = 0; i < timesteps_.size(); ++i)
    if (timesteps_[i] == timestep) found.push_back(static_cast<int>(i));
  if (found.empty()) return -1;
  // diffusers takes the second occurrence, so that a schedule started midway does not skip a sigma
  return found.size() > 1 ? found[1] : found[0];
}

void Scheduler::init_step_index(double timestep, bool fallback_to_last) {
  if (begin_index_ >= 0) {
    step_index_ = begin_index_;
    return;
  }
  const int found = index_for_timestep(timestep);
  if (found < 0) {
    if (!fallback_to_last || timesteps_.empty())
      throw Error("scheduler " + name_ + ": timestep " + std::to_string(timestep) +
                  " is not in the schedule (call set_timesteps and pass its timesteps in order)");
    step_index_ = static_cast<int>(timesteps_.size()) - 1;
    return;
  }
  step_index_ = found;
}

void Scheduler::set_begin_index(int index) {
  if (timesteps_.empty()) throw Error("scheduler " + name_ + ": call set_timesteps before set_begin_index");
  if (index < 0 || index >= static_cast<int>(timesteps_.size()))
    throw Error("scheduler " + name_ + ": begin index " + std::to_string(index) + " is outside the " +
                std::to_string(timesteps_.size()) + " timesteps");
  begin_index_ = index;
}

at::Tensor Scheduler::add_noise(const at::Tensor& original, const at::Tensor& noise, double timestep) const {
  if (!original.sizes().equals(noise.sizes())) throw Error("add_noise: sample and noise shapes differ");
  if (noise_form_ == NoiseForm::kAlphasCumprod) {
    const int64_t t = std::llround(timestep);
    return add_noise(original, noise, at::full({1}, t, at::kLong));
  }
  int index = step_index_ >= 0 ? step_index_ : begin_index_ >= 0 ? begin_index_ : index_for_timestep(timestep);
  if (index < 0 || !sigmas_.defined() || index >= sigmas_.size(0))
    throw Error("scheduler " + name_ + ": add_noise at timestep " + std::to_string(timestep) +
                ", which is not in the schedule");
  const at::Tensor sigma = sigmas_[index].to(original.scalar_type());  // 0-dim, float32
  if (noise_form_ == NoiseForm::kSigma) return original + noise * sigma;
  const detail::AlphaSigma as = detail::alpha_sigma(sigma);
  return as.alpha * original + as.sigma * noise;
}

void Scheduler::require_step_available() const {
  if (timesteps_.empty()) throw Error("scheduler " + name_ + ": call set_timesteps before step");
  if (step_index_ >= static_cast<int>(timesteps_.size()))
    throw Error("scheduler " + name_ + ": step called more often than there are timesteps (" +
                std::to_string(timesteps_.size()) + ")");
}

namespace {

void check_training_inputs(const at::Tensor& sample, const at::Tensor& noise, const at::Tensor& timesteps,
                           int num_train_timesteps) {
  if (!sample.sizes().equals(noise.sizes()))
    throw Error("add_noise: sample and noise shapes differ");
  if (timesteps.scalar_type() != at::kLong) throw Error("add_noise: timesteps must be an int64 tensor");
  if (timesteps.numel() == 0) return;
  const int64_t lo = timesteps.min().item<int64_t>(), hi = timesteps.max().item<int64_t>();
  if (lo < 0 || hi >= num_train_timesteps)
    throw Error("add_noise: timesteps must lie in [0, " + std::to_string(num_train_timesteps) + "), got " +
                std::to_string(lo) + ".." + std::to_string(hi));
}

}  // namespace

at::Tensor Scheduler::add_noise(const at::Tensor& original, const at::Tensor& noise,
                                const at::Tensor& timesteps) const {
  check_training_inputs(original, noise, timesteps, num_train_timesteps_);
  const at::Tensor ac = alphas_cumprod_.to(original.device(), original.scalar_type());
  const at::Tensor t = timesteps.to(original.device());
  const at::Tensor sqrt_alpha_prod = unsqueeze_to(at::pow(ac.index({t}), 0.5), original.dim());
  const at::Tensor sqrt_one_minus_alpha_prod = unsqueeze_to(at::pow(at::rsub(ac.index({t}), 1), 0.5), original.dim());
  return sqrt_alpha_prod * original + sqrt_one_minus_alpha_prod * noise;
}

at::Tensor Scheduler::get_velocity(const at::Tensor& sample, const at::Tensor& noise,
                                   const at::Tensor& timesteps) const {
  check_training_inputs(sample, noise, timesteps, num_train_timesteps_);
  const at::Tensor ac = alphas_cumprod_.to(sample.device(), sample.scalar_type());
  const at::Tensor t = timesteps.to(sample.device());
  const at::Tensor sqrt_alpha_prod = unsqueeze_to(at::pow(ac.index({t}), 0.5), sample.dim());
  const at::Tensor sqrt_one_minus_alpha_prod = unsqueeze_to(at::pow(at::rsub(ac.index({t}), 1), 0.5), sample.dim());
  return sqrt_alpha_prod * noise - sqrt_one_minus_alpha_prod * sample;
}

}  // namespace tide::schedulers
