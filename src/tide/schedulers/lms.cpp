// LMSDiscreteScheduler (diffusers 0.35): linear multistep (order 4) on the sigma ODE. The coefficients
// are integrals of Lagrange basis polynomials, which diffusers takes from scipy.integrate.quad; for
// these cubic integrands quad returns its first 21-point Gauss-Kronrod sum, computed here the same way.
#include <cmath>
#include <deque>

#include "tide/schedulers/sigma_scheduler.h"

namespace tide::schedulers::detail {

namespace {

// QUADPACK dqk21: Kronrod nodes (xgk[1], xgk[3], ... are the 10-point Gauss nodes) and weights.
constexpr double kXgk[11] = {0.995657163025808080735527280689003, 0.973906528517171720077964012084452,
                             0.930157491355708226001207180059508, 0.865063366688984510732096688423493,
                             0.780817726586416897063717578345042, 0.679409568299024406234327365114874,
                             0.562757134668604683339000099272694, 0.433395394129247190799265943165784,
                             0.294392862701460198131126603103866, 0.148874338981631210884826001129720,
                             0.000000000000000000000000000000000};
constexpr double kWgk[11] = {0.011694638867371874278064396062192, 0.032558162307964727478818972459390,
                             0.054755896574351996031381300244580, 0.075039674810919952767043140916190,
                             0.093125454583697605535065465083366, 0.109387158802297641899210590325805,
                             0.123491976262065851077208931996438, 0.134709217311473325928054001771707,
                             0.142775938577060080797094273138717, 0.147739104901338491374841515972068,
                             0.149445554002916905664936468389821};

// The 21-point Kronrod estimate of the integral of f over [a, b], summed in QUADPACK's order.
template <typename F>
double kronrod21(const F& f, double a, double b) {
  const double centr = 0.5 * (a + b);
  const double hlgth = 0.5 * (b - a);
  double resk = kWgk[10] * f(centr);
  for (int j = 1; j <= 5; ++j) {  // Gauss nodes first, then the Kronrod-only nodes
    const int k = 2 * j - 1;
    const double absc = hlgth * kXgk[k];
    resk += kWgk[k] * (f(centr - absc) + f(centr + absc));
  }
  for (int j = 1; j <= 5; ++j) {
    const int k = 2 * j - 2;
    const double absc = hlgth * kXgk[k];
    resk += kWgk[k] * (f(centr - absc) + f(centr + absc));
  }
  return resk * hlgth;
}

class Lms final : public SigmaScheduler {
 public:
  explicit Lms(const Config& c) : SigmaScheduler(c, "lms", {"epsilon", "v_prediction", "sample"}) {
    karras_ = read_use_karras_sigmas(c);
    read_timestep_spacing(c);
    alphas_cumprod_ = alphas_cumprod_from_betas(make_betas(c, BetaDefaults{}));
    set_timesteps(num_train_timesteps_);  // like diffusers' __init__
  }

  void set_timesteps(int n) override {
    auto [t, train] = start_set_timesteps(n);
    std::vector<double> sigmas = np_interp_index(t, train);
    if (karras_) {  // LMS's own _convert_to_karras: the interpolated end points, no config override
      SigmaSchedule karras = karras_schedule(sigmas.back(), sigmas.front(), n, train);
      sigmas = std::move(karras.sigmas);
      t = std::move(karras.timesteps);
    }
    sigmas.push_back(0.0);
    sigmas_ = float32_tensor(sigmas);
    sigma_values_ = tensor_values(sigmas_);
    timesteps_ = to_float32_values(t);
    derivatives_.clear();
    finish_set_timesteps();
  }

  at::Tensor step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                  at::Generator&) override {
    constexpr int kOrder = 4;
    if (step_index_ < 0) init_step_index(timestep, false);
    require_step_available();
    const at::Tensor sigma = sigmas_[step_index_];
    const at::Tensor denoised = k_denoised(prediction_type_, model_output, sample, sigma);
    derivatives_.push_back((sample - denoised) / sigma);
    if (derivatives_.size() > kOrder) derivatives_.pop_front();

    const int order = std::min(step_index_ + 1, kOrder);
    // sample + sum(coeff * derivative) with the newest derivative first; Python's sum starts from 0.
    // diffusers zips the coefficients with the derivatives, so a schedule started midway (image-to-image:
    // step index > 0, fewer derivatives than the order) uses only the derivatives it has.
    const int terms = std::min(order, static_cast<int>(derivatives_.size()));
    at::Tensor sum;
    for (int k = 0; k < terms; ++k) {
      const at::Tensor term = lms_coefficient(order, step_index_, k) * derivatives_[derivatives_.size() - 1 - k];
      sum = k == 0 ? term : sum + term;
    }
    ++step_index_;
    return sample + sum;
  }

 private:
  // Integral over [sigma_t, sigma_t+1] of the Lagrange basis polynomial of derivative `current`.
  // The integrand is evaluated in float32 like diffusers' (0-dim float32 tensors times Python floats).
  double lms_coefficient(int order, int t, int current) const {
    const auto basis = [&](double tau) -> double {
      if (order == 1) return 1.0;  // the product over no factors stays the Python float 1.0
      float prod = 1.0f;
      for (int k = 0; k < order; ++k) {
        if (k == current) continue;
        const float num = static_cast<float>(tau) - static_cast<float>(sigma_values_[t - k]);
        const float den = static_cast<float>(sigma_values_[t - current]) - static_cast<float>(sigma_values_[t - k]);
        prod *= num / den;
      }
      return prod;
    };
    return kronrod21(basis, sigma_values_[t], sigma_values_[t + 1]);
  }

  bool karras_ = false;
  std::vector<double> sigma_values_;
  std::deque<at::Tensor> derivatives_;
};

}  // namespace

std::unique_ptr<Scheduler> make_lms(const Config& config) { return std::make_unique<Lms>(config); }

}  // namespace tide::schedulers::detail
