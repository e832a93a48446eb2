// UniPCMultistepScheduler (diffusers 0.35): unified predictor (UniP) and corrector (UniC) with the
// B(h) variants bh1/bh2, on x0 predictions (predict_x0) or noise predictions.
#include <algorithm>

#include "tide/runtime/error.h"
#include "tide/schedulers/multistep.h"

namespace tide::schedulers::detail {

namespace {

class UniPc final : public Scheduler {
 public:
  explicit UniPc(const Config& c) : config_(c) {
    name_ = "unipc";
    noise_form_ = NoiseForm::kAlphaSigma;
    num_train_timesteps_ = c.get_int("num_train_timesteps", 1000);
    solver_order_ = c.get_int("solver_order", 2);
    if (solver_order_ < 1) c.fail("solver_order", "must be at least 1");
    prediction_type_ = read_prediction_type(c, {"epsilon", "sample", "v_prediction"});
    thresholding_ = read_thresholding(c);
    predict_x0_ = c.get_bool("predict_x0", true);
    solver_type_ = c.get_string("solver_type", "bh2");
    if (solver_type_ == "midpoint" || solver_type_ == "heun" || solver_type_ == "logrho") solver_type_ = "bh2";
    if (solver_type_ != "bh1" && solver_type_ != "bh2") c.fail("solver_type", "is '" + solver_type_ + "'; supported: bh1, bh2");
    lower_order_final_ = c.get_bool("lower_order_final", true);
    if (c.has("disable_corrector")) {
      const auto& v = c.json().at("disable_corrector");
      if (!v.is_array()) c.fail("disable_corrector", "must be a list of step indices");
      for (const auto& i : v) {
        if (!i.is_number_integer()) c.fail("disable_corrector", "must be a list of step indices");
        disable_corrector_.push_back(i.get<int>());
      }
    }
    if (c.has("solver_p")) c.fail("solver_p", "(another scheduler as predictor) is not supported");
    karras_ = read_use_karras_sigmas(c);
    for (const char* key : {"use_flow_sigmas", "use_dynamic_shifting"}) c.require_false(key);
    spacing_ = c.get_choice("timestep_spacing", "linspace", {"linspace", "leading", "trailing"});
    steps_offset_ = c.get_int("steps_offset", 0);
    final_sigmas_type_ = c.get_choice("final_sigmas_type", "zero", {"zero", "sigma_min"});
    alphas_cumprod_ = sigma_alphas_cumprod(c);
    init_noise_sigma_ = 1.0;
  }

  void set_timesteps(int n) override {
    if (n < 1) throw Error("unipc: the number of steps must be at least 1");
    std::vector<double> t = multistep_timesteps(spacing_, num_train_timesteps_, num_train_timesteps_, n, steps_offset_);

    const std::vector<double> train = train_sigmas(alphas_cumprod_);
    std::vector<double> sigmas;
    double sigma_last = 0;
    if (karras_) {
      const auto [lo, hi] = karras_range(config_, train.front(), train.back());
      SigmaSchedule karras = karras_schedule(lo, hi, n, train);
      sigmas = std::move(karras.sigmas);
      t = std::move(karras.timesteps);
      for (double& v : t) v = np_round(v);
      if (final_sigmas_type_ == "sigma_min") sigma_last = sigmas.back();
    } else {
      sigmas = np_interp_index(t, train);
      if (final_sigmas_type_ == "sigma_min") sigma_last = train.front();
    }
    sigmas.push_back(sigma_last);
    sigmas_ = float32_tensor(sigmas);
    for (double& v : t) v = static_cast<double>(static_cast<int64_t>(v));  // .to(torch.int64)
    timesteps_ = t;
    num_inference_steps_ = static_cast<int>(t.size());
    model_outputs_.assign(solver_order_, at::Tensor());
    lower_order_nums_ = 0;
    this_order_ = 0;
    last_sample_ = at::Tensor();
    step_index_ = -1;
    begin_index_ = -1;
  }

  at::Tensor step(const at::Tensor& model_output, double timestep, const at::Tensor& sample_in,
                  at::Generator&) override {
    if (step_index_ < 0) init_step_index(timestep, true);
    require_step_available();
    const bool use_corrector = step_index_ > 0 && last_sample_.defined() &&
                               std::find(disable_corrector_.begin(), disable_corrector_.end(), step_index_ - 1) ==
                                   disable_corrector_.end();
    const at::Tensor converted = convert_model_output(model_output, sample_in);
    at::Tensor sample = sample_in;
    if (use_corrector) sample = corrector_update(converted, last_sample_, sample_in, this_order_);

    for (int i = 0; i + 1 < solver_order_; ++i) model_outputs_[i] = model_outputs_[i + 1];
    model_outputs_.back() = converted;

    const int n = static_cast<int>(timesteps_.size());
    int order = lower_order_final_ ? std::min(solver_order_, n - step_index_) : solver_order_;
    this_order_ = std::min(order, lower_order_nums_ + 1);  // warm-up of the multistep method
    last_sample_ = sample;
    const at::Tensor prev = predictor_update(sample, this_order_);
    if (lower_order_nums_ < solver_order_) ++lower_order_nums_;
    ++step_index_;
    return prev;
  }

 private:
  struct Coefficients {
    at::Tensor h, hh, h_phi_1, B_h;
    std::vector<at::Tensor> rks, D1s;  // rks without the final 1.0
    at::Tensor R, b;                   // the order x order system (order >= 2 only)
  };

  at::Tensor convert_model_output(const at::Tensor& model_output, const at::Tensor& sample) const {
    const AlphaSigma as = alpha_sigma(sigmas_[step_index_]);
    if (predict_x0_) return thresholding_.apply(data_prediction(prediction_type_, model_output, sample, as));
    return noise_prediction(prediction_type_, model_output, sample, as);
  }

  // The shared part of UniP and UniC between sigmas[s0] and sigmas[t]; the earlier points are
  // sigmas[s0 - 1 - i] for predictor (offset 0) and sigmas[s0 - 1 - i] with s0 = step - 1 for the corrector.
  Coefficients coefficients(int t_index, int s0_index, int order) const {
    Coefficients k;
    const auto t = alpha_sigma(sigmas_[t_index]);
    const auto s0 = alpha_sigma(sigmas_[s0_index]);
    const at::Tensor lambda_s0 = lambda(s0);
    k.h = lambda(t) - lambda_s0;
    const at::Tensor& m0 = model_outputs_.back();
    for (int i = 1; i < order; ++i) {
      const at::Tensor lambda_si = lambda(alpha_sigma(sigmas_[s0_index - i]));
      const at::Tensor rk = (lambda_si - lambda_s0) / k.h;
      k.rks.push_back(rk);
      k.D1s.push_back((model_outputs_[solver_order_ - 1 - i] - m0) / rk);
    }
    k.hh = predict_x0_ ? -k.h : k.h;
    k.h_phi_1 = at::expm1(k.hh);  // h * phi_1(h) = e^h - 1
    k.B_h = solver_type_ == "bh1" ? k.hh : at::expm1(k.hh);
    if (order >= 2) {
      std::vector<at::Tensor> rks = k.rks, R, b;
      rks.push_back(at::scalar_tensor(1.0, at::kFloat));
      const at::Tensor rk_vec = at::stack(rks);
      at::Tensor h_phi_k = k.h_phi_1 / k.hh - 1;
      int64_t factorial = 1;
      for (int i = 1; i <= order; ++i) {
        R.push_back(at::pow(rk_vec, i - 1));
        b.push_back(h_phi_k * factorial / k.B_h);
        factorial *= i + 1;
        h_phi_k = h_phi_k / k.hh - 1.0 / static_cast<double>(factorial);
      }
      k.R = at::stack(R);
      k.b = at::stack(b);
    }
    return k;
  }

  // x_t_ = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0 (x0 form), or its noise-prediction twin.
  at::Tensor base_update(const at::Tensor& x, int t_index, int s0_index, const Coefficients& k) const {
    const auto [alpha_t, sigma_t] = alpha_sigma(sigmas_[t_index]);
    const auto [alpha_s0, sigma_s0] = alpha_sigma(sigmas_[s0_index]);
    const at::Tensor& m0 = model_outputs_.back();
    if (predict_x0_) return sigma_t / sigma_s0 * x - alpha_t * k.h_phi_1 * m0;
    return alpha_t / alpha_s0 * x - sigma_t * k.h_phi_1 * m0;
  }

  at::Tensor scale_t(int t_index) const {
    const auto [alpha_t, sigma_t] = alpha_sigma(sigmas_[t_index]);
    return predict_x0_ ? alpha_t : sigma_t;
  }

  // UniP: from sigmas[step] to sigmas[step + 1].
  at::Tensor predictor_update(const at::Tensor& x, int order) const {
    const Coefficients k = coefficients(step_index_ + 1, step_index_, order);
    const at::Tensor x_t_ = base_update(x, step_index_ + 1, step_index_, k);
    if (k.D1s.empty()) return x_t_;  // x_t_ - scale * B_h * 0
    at::Tensor rhos_p;
    if (order == 2) {  // simplified second order
      rhos_p = at::full({1}, 0.5, x.options());
    } else {
      const int64_t m = order - 1;
      rhos_p = at::linalg_solve(k.R.slice(0, 0, m).slice(1, 0, m), k.b.slice(0, 0, m)).to(x.scalar_type());
    }
    const at::Tensor pred_res = at::einsum("k,bkc...->bc...", {rhos_p, at::stack(k.D1s, 1)});
    return x_t_ - scale_t(step_index_ + 1) * k.B_h * pred_res;
  }

  // UniC: corrects this step's sample (reached from sigmas[step - 1]) with this step's model output.
  at::Tensor corrector_update(const at::Tensor& model_t, const at::Tensor& last_sample, const at::Tensor& this_sample,
                              int order) const {
    const Coefficients k = coefficients(step_index_, step_index_ - 1, order);
    const at::Tensor x_t_ = base_update(last_sample, step_index_, step_index_ - 1, k);
    at::Tensor rhos_c = order == 1 ? at::full({1}, 0.5, last_sample.options())
                                   : at::linalg_solve(k.R, k.b).to(last_sample.scalar_type());
    const at::Tensor D1_t = model_t - model_outputs_.back();
    at::Tensor res = rhos_c[-1] * D1_t;
    if (!k.D1s.empty())
      res = at::einsum("k,bkc...->bc...", {rhos_c.slice(0, 0, -1), at::stack(k.D1s, 1)}) + res;
    return (x_t_ - scale_t(step_index_) * k.B_h * res).to(last_sample.scalar_type());
  }

  Config config_;
  int solver_order_ = 2;
  Thresholding thresholding_;
  bool predict_x0_ = true, lower_order_final_ = true, karras_ = false;
  std::string solver_type_, spacing_, final_sigmas_type_;
  std::vector<int> disable_corrector_;
  int steps_offset_ = 0;
  std::vector<at::Tensor> model_outputs_;  // converted outputs, newest last
  int lower_order_nums_ = 0, this_order_ = 0;
  at::Tensor last_sample_;
};

}  // namespace

std::unique_ptr<Scheduler> make_unipc(const Config& config) { return std::make_unique<UniPc>(config); }

}  // namespace tide::schedulers::detail
