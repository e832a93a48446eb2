#include "tide/train/sample_loss.h"

#include <ATen/record_function.h>

#include "tide/runtime/error.h"
#include "tide/train/placeholder.h"

namespace tide::train {

at::Tensor sample_loss(TrainingModels& models, const schedulers::Scheduler& noise_scheduler, const at::Tensor& vectors,
                       int64_t first_id, const SampleInputs& s, at::ScalarType unet_dtype) {
  if (!(models.vae_scaling_factor > 0)) throw Error("sample_loss: TrainingModels::vae_scaling_factor is not set");
  const at::Tensor latents =
      (s.moments.mean + s.moments.std * s.latent_eps) * models.vae_scaling_factor;  // [1, C, h, w]
  const at::Tensor t = at::full({1}, s.timestep, at::TensorOptions().dtype(at::kLong));
  const at::Tensor noisy = noise_scheduler.add_noise(latents, s.noise, t);
  const at::Tensor target =
      noise_scheduler.prediction_type() == "epsilon" ? s.noise : noise_scheduler.get_velocity(latents, s.noise, t);

  at::Tensor context;  // [1, 77, D]
  {
    RECORD_USER_SCOPE("stage:text_encoder");  // stages of `tide train-ti --profile`
    const at::Tensor inputs = embed_with_vectors(models.text_encoder, s.ids, vectors, first_id);  // [1, 77, D]
    context = models.text_encoder->forward_embeddings(inputs, s.ids).last_hidden_state;
  }
  RECORD_USER_SCOPE("stage:unet");
  const at::Tensor pred =
      models.unet->forward(noisy.to(unet_dtype), static_cast<double>(s.timestep), context.to(unet_dtype));
  return at::mse_loss(pred.to(at::kFloat), target.to(at::kFloat));
}

}  // namespace tide::train
