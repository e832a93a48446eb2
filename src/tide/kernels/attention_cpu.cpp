#include "tide/kernels/attention_cpu.h"

#include "tide/kernels/attention_f16.h"
#include "tide/kernels/exp_avx2.h"
#include "tide/kernels/gemm_avx512.h"
#include "tide/kernels/gemm_cpu.h"

#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define TIDE_X86 1
#endif

namespace tide::kernels {
namespace {

// One softmax row in place: x <- exp(x - max(x)); returns the sum (the caller divides the output by it).
float softmax_row_scalar(float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - m));
  return sum;
}

#ifdef TIDE_X86
__attribute__((target("avx2,fma"))) float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) float softmax_row_avx2(float* x, int64_t n) {
  const int64_t nv = n - n % 8;
  __m256 vm = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < nv; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vm);
  float m = *std::max_element(lanes, lanes + 8);
  for (int64_t i = nv; i < n; ++i) m = std::max(m, x[i]);
  const __m256 bm = _mm256_set1_ps(m);
  __m256 vs = _mm256_setzero_ps();
  for (int64_t i = 0; i < nv; i += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(x + i), bm));
    _mm256_storeu_ps(x + i, e);
    vs = _mm256_add_ps(vs, e);
  }
  float sum = hsum(vs);
  for (int64_t i = nv; i < n; ++i) sum += (x[i] = std::exp(x[i] - m));
  return sum;
}

const bool kHasAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");


// exp(x - max) in place over a row whose max is known; returns the sum.
__attribute__((target("avx2,fma"))) float exp_row_avx2(float* x, int64_t n, float m) {
  const int64_t nv = n - n % 8;
  const __m256 bm = _mm256_set1_ps(m);
  __m256 vs0 = _mm256_setzero_ps(), vs1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= nv; i += 16) {
    const __m256 e0 = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(x + i), bm));
    const __m256 e1 = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), bm));
    _mm256_storeu_ps(x + i, e0);
    _mm256_storeu_ps(x + i + 8, e1);
    vs0 = _mm256_add_ps(vs0, e0);
    vs1 = _mm256_add_ps(vs1, e1);
  }
  for (; i < nv; i += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(x + i), bm));
    _mm256_storeu_ps(x + i, e);
    vs0 = _mm256_add_ps(vs0, e);
  }
  if (i < n) {  // the last n % 8 through a mask (77 text tokens leave 5): lanes past them give exp(0), added as 0
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n - i)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 lanes = _mm256_castsi256_ps(mask);
    const __m256 v = _mm256_blendv_ps(bm, _mm256_maskload_ps(x + i, mask), lanes);
    const __m256 e = exp_nonpositive(_mm256_sub_ps(v, bm));
    _mm256_maskstore_ps(x + i, mask, e);
    vs1 = _mm256_add_ps(vs1, _mm256_and_ps(e, lanes));
  }
  return hsum(_mm256_add_ps(vs0, vs1));
}

// exp(x - max) in place over a row, its sum returned: in 512-bit vectors where allowed and the CPU has them
// (kernels/gemm_avx512.h; with the scores' and probs·v's 512-bit tiles, 1.7× the AVX2 kernels at 4096 tokens).
float exp_row(float* x, int64_t n, float max, bool allow_avx512) {
  return allow_avx512 && gemm_avx512_available() ? exp_row_avx512(x, n, max) : exp_row_avx2(x, n, max);
}
#endif

float softmax_row(float* x, int64_t n) {
#ifdef TIDE_X86
  if (kHasAvx2) return softmax_row_avx2(x, n);
#endif
  return softmax_row_scalar(x, n);
}

// Scratch for one strip of scores, reused across calls by each worker thread.
float* strip_buffer(size_t floats) {
  thread_local std::vector<float> buffer;
  if (buffer.size() < floats) buffer.resize(floats);
  return buffer.data();
}

}  // namespace

bool blocked_attention_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  for (const at::Tensor* t : {&q, &k, &v}) {
    if (!t->defined() || t->dim() != 4 || t->scalar_type() != at::kFloat || !t->device().is_cpu()) return false;
    if (c10::GradMode::is_enabled() && t->requires_grad()) return false;
  }
  return q.size(3) == k.size(3) && k.size(3) == v.size(3) && k.size(2) == v.size(2) && q.size(0) == k.size(0) &&
         q.size(1) == k.size(1) && k.size(0) == v.size(0) && k.size(1) == v.size(1);
}

at::Tensor blocked_attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                             int64_t query_block, bool allow_avx512, bool half_products) {
  TORCH_CHECK(blocked_attention_supported(q_in, k_in, v_in), "blocked_attention: unsupported inputs");
  // BLAS wants unit stride along d and a row stride of at least d.
  auto last_dim_contiguous = [](const at::Tensor& t) {
    return t.stride(3) == 1 && t.stride(2) >= t.size(3) ? t : t.contiguous();
  };
  const at::Tensor q = last_dim_contiguous(q_in), k = last_dim_contiguous(k_in), v = last_dim_contiguous(v_in);
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), Lk = k.size(2), d = q.size(3);
  at::Tensor out = at::empty({B, Lq, H, d}, q.options());  // heads interleaved: [B, Lq, H·d] when merged
  if (out.numel() == 0) return out.permute({0, 2, 1, 3});
  if (Lk == 0) return out.zero_().permute({0, 2, 1, 3});

#ifdef TIDE_X86
  const bool own_gemm = kHasAvx2;
#else
  const bool own_gemm = false;
#endif
  // ~384 KB of scores per strip: stays in L2 between the two products. A multiple of the 6-row tile.
  constexpr int64_t kMaxBlock = 252;
  const int64_t auto_block = std::max<int64_t>(6, (98304 / Lk) / 6 * 6);
  const int64_t bq = std::clamp<int64_t>(query_block > 0 ? query_block : auto_block, 1, kMaxBlock);
  const int64_t blocks = (Lq + bq - 1) / bq;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const at::Tensor out_heads = out.permute({0, 2, 1, 3});  // [B, H, Lq, d] view

  // Float16 products (kernels/attention_f16.h): float16 copies made in one pass each, O(L·d) against the O(L²·d)
  // products: q [B, H, Lq, d], k and v as pairs along the summed dimension, k_pairs [B, H, d/2, Lk, 2] and v_pairs
  // [B, H, lke/2, d, 2] (lke: Lk rounded up to even, an odd count's last pair padded with a zero key). The scores
  // stay unscaled and the scale joins the softmax's exp. Even head dimensions up to kHalfHeadDimMax (SD's are).
  const int64_t lke = Lk + Lk % 2;
  at::Tensor q16, k_pairs, v_pairs;
  const auto bits = [](at::Tensor& t) { return reinterpret_cast<uint16_t*>(t.data_ptr<at::Half>()); };
  if (own_gemm && allow_avx512 && half_products && d % 2 == 0 && d <= kHalfHeadDimMax &&
      attention_half_products_available()) {
    const auto half_options = q.options().dtype(at::kHalf);
    q16 = at::empty({B, H, Lq, d}, half_options);
    k_pairs = at::empty({B, H, d / 2, Lk, 2}, half_options);
    v_pairs = at::empty({B, H, lke / 2, d, 2}, half_options);
    uint16_t *q16_out = bits(q16), *k_out = bits(k_pairs), *v_out = bits(v_pairs);
    const float *q_in = q.data_ptr<float>(), *k_in = k.data_ptr<float>(), *v_in = v.data_ptr<float>();
    std::vector<std::array<float, 3>> maxima(B * H);  // per head: max |q|, |k|, |v| (NaN if any is NaN)
    at::parallel_for(0, B * H, 1, [&](int64_t first, int64_t last) {
      for (int64_t bh = first; bh < last; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        maxima[bh] = {pack_half_rows(q_in + b * q.stride(0) + h * q.stride(1), q.stride(2), Lq, d, q16_out + bh * Lq * d),
                      pack_half_column_pairs(k_in + b * k.stride(0) + h * k.stride(1), k.stride(2), Lk, d,
                                             k_out + bh * d * Lk),
                      pack_half_row_pairs(v_in + b * v.stride(0) + h * v.stride(1), v.stride(2), Lk, d,
                                          v_out + bh * lke * d)};
      }
    });
    std::array<float, 3> max{0, 0, 0};
    for (const auto& head : maxima)
      for (int i = 0; i < 3; ++i) max[i] = std::isnan(head[i]) || std::isnan(max[i]) ? NAN : std::max(max[i], head[i]);
    if (!attention_half_products_fit(d, max[0], max[1], max[2])) q16 = k_pairs = v_pairs = at::Tensor();
  }
  const bool half = q16.defined();
  const uint16_t *q16p = half ? bits(q16) : nullptr, *k_pairs_p = half ? bits(k_pairs) : nullptr,
                 *v_pairs_p = half ? bits(v_pairs) : nullptr;
  // The float16 probabilities' rows: 64 bytes past a multiple of 4 KiB, so that a tile's rows do not all fall in
  // one set of the L1 cache.
  const int64_t ldp = lke + 32;

  // Float32 products: scaling q or k once is cheaper than scaling every score: k where it is the shorter
  // (cross-attention's 77 text tokens; q is then read in place: 1.08–1.13× on SD 1.5's). kᵀ made dense once so
  // the score product streams it.
  const bool k_scaled = Lk < Lq;
  const at::Tensor qs = half ? q : k_scaled ? q : q * scale;                                // [B, H, Lq, d]
  const at::Tensor kt = half ? k : (k_scaled ? k * scale : k).transpose(2, 3).contiguous();  // [B, H, d, Lk]
  const float *qp = qs.data_ptr<float>(), *ktp = kt.data_ptr<float>(), *vp = v.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t ldo = H * d;
  // The float16 probs·v's keys per step: v's block (2 bytes a value) in L1, a multiple of the float16 sums' chunks.
  const int64_t half_key_block = std::max<int64_t>(1, 32768 / (2 * d) / kHalfSumLength) * kHalfSumLength;
  // Keys per step of the probs·v product: that slice of v (kKeyBlock × d) stays in L1/L2 while every row
  // of the strip uses it.
  const int64_t key_block = std::max<int64_t>(64, 32768 / (4 * d));

  // Strips are handed out one at a time from a shared counter rather than split evenly up front: on a
  // machine shared with other jobs one worker may get less CPU time, and a static split then waits for it.
  const int64_t tasks = B * H * blocks;
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), tasks);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    // Scores [bq, Lk] in float32, then (float16 products) their probabilities [bq, ldp] as float16.
    float* strip = strip_buffer(static_cast<size_t>(bq * Lk + (half ? bq * ldp / 2 : 0)));
    uint16_t* probs = reinterpret_cast<uint16_t*>(strip + bq * Lk);
    float row_max[kMaxBlock], inv_sum[kMaxBlock];
    for (int64_t task = next.fetch_add(1); task < tasks; task = next.fetch_add(1)) {
      const int64_t bh = task / blocks, b = bh / H, h = bh % H;
      const int64_t i0 = (task % blocks) * bq, rows = std::min(bq, Lq - i0);
      const float* qb = qp + b * qs.stride(0) + h * qs.stride(1) + i0 * qs.stride(2);
      const float* ktb = ktp + b * kt.stride(0) + h * kt.stride(1);
      const float* vb = vp + b * v.stride(0) + h * v.stride(1);
      float* ob = op + (b * Lq + i0) * ldo + h * d;
      if (half) {
#ifdef TIDE_X86
        std::fill(row_max, row_max + rows, -std::numeric_limits<float>::infinity());
        const int64_t head = b * H + h;
        scores_half(rows, Lk, d, q16p + (head * Lq + i0) * d, d, k_pairs_p + head * d * Lk, 2 * Lk, strip, Lk,
                    row_max);  // unscaled scores [rows, Lk]
        for (int64_t r = 0; r < rows; ++r) {
          inv_sum[r] = 1.0f / exp_row_to_half_avx512(strip + r * Lk, Lk, row_max[r], float(scale), probs + r * ldp);
          if (Lk % 2) probs[r * ldp + Lk] = 0;  // the padding key
        }
        for (int64_t k0 = 0; k0 < lke; k0 += half_key_block)
          gemm_half(rows, d, std::min(half_key_block, lke - k0), probs + k0, ldp, v_pairs_p + (head * lke + k0) * d,
                       2 * d, ob, ldo, /*accumulate=*/k0 > 0);  // out [rows, d]
#endif
      } else if (own_gemm) {
#ifdef TIDE_X86
        std::fill(row_max, row_max + rows, -std::numeric_limits<float>::infinity());
        // scores [rows, Lk]
        gemm_row_max_f32(rows, Lk, d, qb, qs.stride(2), ktb, Lk, strip, Lk, row_max, allow_avx512);
        for (int64_t r = 0; r < rows; ++r) inv_sum[r] = 1.0f / exp_row(strip + r * Lk, Lk, row_max[r], allow_avx512);
        for (int64_t k0 = 0; k0 < Lk; k0 += key_block) {
          const int64_t kn = std::min(key_block, Lk - k0);
          const float* pk = strip + k0;
          const float* vk = vb + k0 * v.stride(2);
          gemm_f32(rows, d, kn, pk, Lk, vk, v.stride(2), ob, ldo, /*accumulate=*/k0 > 0, allow_avx512,
                   /*transpose_a=*/false, /*tall_tiles=*/true);  // out [rows, d]
        }
#endif
      } else {
        at::Tensor scores = at::from_blob(strip, {rows, Lk}, q.options());
        at::mm_out(scores, qs[b][h].narrow(0, i0, rows), kt[b][h]);
        for (int64_t r = 0; r < rows; ++r) inv_sum[r] = 1.0f / softmax_row(strip + r * Lk, Lk);
        at::Tensor ob_view = out_heads[b][h].narrow(0, i0, rows);
        at::mm_out(ob_view, scores, v[b][h]);
      }
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < d; ++c) ob[r * ldo + c] *= inv_sum[r];
    }
  });
  return out.permute({0, 2, 1, 3});  // [B, H, Lq, d]
}


// ---- Backward ----

namespace {

// Heads folded into the batch, dense: [B, H, L, d] (usually strided head views) -> [B·H, L, d].
at::Tensor fold_heads(const at::Tensor& t) { return t.reshape({t.size(0) * t.size(1), t.size(2), t.size(3)}); }

// The BLAS path: each strip's [B·H, rows, Lk] probabilities with bmm over all heads at once. `qs` = q·scale,
// `delta` [B·H, Lq, 1]; dk and dv accumulate into zeros, dq is written strip by strip.
void backward_blas(const at::Tensor& qs, const at::Tensor& k3, const at::Tensor& v3, const at::Tensor& dout,
                   const at::Tensor& delta, int64_t rows, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv) {
  const int64_t Lq = qs.size(1);
  for (int64_t i0 = 0; i0 < Lq; i0 += rows) {
    const int64_t n = std::min(rows, Lq - i0);
    const at::Tensor q_s = qs.narrow(1, i0, n), dout_s = dout.narrow(1, i0, n);  // [B·H, n, d]
    const at::Tensor p = at::softmax(at::bmm(q_s, k3.transpose(1, 2)), -1);     // [B·H, n, Lk]
    if (dv.defined()) dv.baddbmm_(p.transpose(1, 2), dout_s);                    // += Pᵀ·dO_s
    if (!dq.defined() && !dk.defined()) continue;
    at::Tensor ds = at::bmm(dout_s, v3.transpose(1, 2));  // dP [B·H, n, Lk]
    ds.sub_(delta.narrow(1, i0, n)).mul_(p);              // dS = P∘(dP − D), in place
    if (dq.defined()) {
      at::Tensor dq_s = dq.narrow(1, i0, n);
      at::bmm_out(dq_s, ds, k3);  // dS·k; the scale once at the end
    }
    if (dk.defined()) dk.baddbmm_(ds.transpose(1, 2), q_s);  // += scale·dSᵀ·q_s (q_s carries the scale)
  }
}

#ifdef TIDE_X86
__attribute__((target("avx2,fma"))) void scale_row_avx2(float* x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

// The softmax backward on one row, in place over dP: dS = P∘(dP − D).
__attribute__((target("avx2,fma"))) void softmax_grad_row_avx2(const float* p, float* dp, int64_t n, float delta) {
  for (int64_t i = 0; i < n; ++i) dp[i] = p[i] * (dp[i] - delta);
}

// The AVX2 path: one head's strip at a time, its probabilities and dS in a per-thread buffer, the products
// in the forward's register-tiled micro-kernels (with `wide`, in 512-bit vectors where the CPU has AVX-512,
// the transposed products in the AVX-512VL tiles). A task is one head, or with fewer heads than threads a
// chunk of a head's strips with its own dk/dv partial sums (`dk_parts`, `dv_parts` [chunks, B·H, Lk, d],
// zeros), so that no two threads add into the same rows.
void backward_avx2(const at::Tensor& qs, const at::Tensor& k3, const at::Tensor& v3, const at::Tensor& dout,
                   const at::Tensor& delta, int64_t rows, bool wide, at::Tensor& dq, at::Tensor& dk_parts,
                   at::Tensor& dv_parts) {
  const int64_t BH = qs.size(0), Lq = qs.size(1), Lk = k3.size(1), d = qs.size(2);
  const int64_t chunks = dk_parts.defined() ? dk_parts.size(0) : dv_parts.defined() ? dv_parts.size(0) : 1;
  const at::Tensor kt = k3.transpose(1, 2).contiguous(), vt = v3.transpose(1, 2).contiguous();  // [B·H, d, Lk]
  const float *qp = qs.data_ptr<float>(), *kp = k3.data_ptr<float>(), *ktp = kt.data_ptr<float>(),
              *vtp = vt.data_ptr<float>(), *dop = dout.data_ptr<float>(), *deltap = delta.data_ptr<float>();
  float* dqp = dq.defined() ? dq.data_ptr<float>() : nullptr;
  float* dkp = dk_parts.defined() ? dk_parts.data_ptr<float>() : nullptr;
  float* dvp = dv_parts.defined() ? dv_parts.data_ptr<float>() : nullptr;
  const int64_t strips = (Lq + rows - 1) / rows;
  const int64_t key_block = std::max<int64_t>(64, 32768 / (4 * d));  // as in the forward's probs·v

  const int64_t tasks = BH * chunks;
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), tasks);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    float* p = strip_buffer(static_cast<size_t>(2 * rows * Lk));  // P [rows, Lk], then dS [rows, Lk]
    float* ds = p + rows * Lk;
    std::vector<float> row_max(static_cast<size_t>(rows));
    for (int64_t task = next.fetch_add(1); task < tasks; task = next.fetch_add(1)) {
      const int64_t bh = task / chunks, chunk = task % chunks;
      const float *kb = kp + bh * Lk * d, *ktb = ktp + bh * d * Lk, *vtb = vtp + bh * d * Lk;
      float* dkb = dkp ? dkp + (chunk * BH + bh) * Lk * d : nullptr;  // [Lk, d]
      float* dvb = dvp ? dvp + (chunk * BH + bh) * Lk * d : nullptr;
      for (int64_t s = chunk * strips / chunks; s < (chunk + 1) * strips / chunks; ++s) {
        const int64_t i0 = s * rows, n = std::min(rows, Lq - i0);
        const float* q_s = qp + (bh * Lq + i0) * d;  // [n, d], scaled
        const float* do_s = dop + (bh * Lq + i0) * d;
        std::fill(row_max.begin(), row_max.begin() + n, -std::numeric_limits<float>::infinity());
        gemm_row_max_f32(n, Lk, d, q_s, d, ktb, Lk, p, Lk, row_max.data(), wide);  // S [n, Lk]
        for (int64_t r = 0; r < n; ++r) scale_row_avx2(p + r * Lk, Lk, 1.0f / exp_row(p + r * Lk, Lk, row_max[r], wide));
        if (dvb)  // dV += Pᵀ·dO_s
          gemm_f32(Lk, d, n, p, Lk, do_s, d, dvb, d, true, wide, /*transpose_a=*/true, /*tall_tiles=*/true);
        if (!dqp && !dkb) continue;
        gemm_row_max_f32(n, Lk, d, do_s, d, vtb, Lk, ds, Lk, nullptr, wide);  // dP = dO_s·vᵀ [n, Lk]
        for (int64_t r = 0; r < n; ++r) softmax_grad_row_avx2(p + r * Lk, ds + r * Lk, Lk, deltap[bh * Lq + i0 + r]);
        if (dqp)  // dQ_s += dS·k in key blocks whose rows of k stay in L1 (zeros first; the scale at the end)
          for (int64_t k0 = 0; k0 < Lk; k0 += key_block)
            gemm_f32(n, d, std::min(key_block, Lk - k0), ds + k0, Lk, kb + k0 * d, d, dqp + (bh * Lq + i0) * d, d,
                     /*accumulate=*/true, wide, /*transpose_a=*/false, /*tall_tiles=*/true);
        if (dkb)  // dK += dSᵀ·q_s
          gemm_f32(Lk, d, n, ds, Lk, q_s, d, dkb, d, true, wide, /*transpose_a=*/true, /*tall_tiles=*/true);
      }
    }
  });
}
#endif

}  // namespace

int64_t attention_backward_strip_rows(int64_t batch_heads, int64_t lk, bool own_kernels) {
  if (own_kernels) {
    // A head's P and dS strips (2 × rows × Lk floats) in ~512 KiB, inside a 1 MiB L2 with the operands
    // streamed past them; a multiple of the 6-row score tile. At 4096 keys (12 rows) strips of 12 to 96
    // rows measured alike, 6 and 192 slower.
    return std::clamp<int64_t>((65536 / std::max<int64_t>(lk, 1)) / 6 * 6, 6, 252);
  }
  // BLAS over all heads: the strip's [B·H, rows, Lk] tensors within kAttentionBackwardBlasStripBytes.
  const int64_t row_bytes = std::max<int64_t>(1, batch_heads * lk) * int64_t(sizeof(float));
  return std::max<int64_t>(1, kAttentionBackwardBlasStripBytes / row_bytes);
}

std::array<at::Tensor, 3> blocked_attention_backward(const at::Tensor& grad_out, const at::Tensor& q,
                                                     const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                                                     const AttentionBackwardOptions& options) {
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), Lk = k.size(2), d = q.size(3), BH = B * H;
  const auto [need_dq, need_dk, need_dv] = options.needed;
#ifdef TIDE_X86
  const bool own = options.own_kernels && kHasAvx2, wide = own && options.allow_avx512;
#else
  const bool own = false, wide = false;
#endif
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const at::Tensor qs = (fold_heads(q) * scale).contiguous();  // [B·H, Lq, d], the scale applied once
  const at::Tensor k3 = fold_heads(k).contiguous(), v3 = fold_heads(v).contiguous();  // [B·H, Lk, d]
  const at::Tensor dout = fold_heads(grad_out).contiguous();    // [B·H, Lq, d]
  // The softmax backward's Σ_j P_ij·dP_ij equals dO_i·O_i: O(L·d) from the output instead of O(L²) per strip.
  const at::Tensor delta = (dout * fold_heads(out)).sum(-1, /*keepdim=*/true);  // [B·H, Lq, 1]
  const int64_t rows = options.strip_rows > 0 ? options.strip_rows : attention_backward_strip_rows(BH, Lk, own);

  const auto opts = qs.options();
  at::Tensor dq = need_dq ? at::zeros({BH, Lq, d}, opts) : at::Tensor();
  at::Tensor dk, dv;
  if (own) {
#ifdef TIDE_X86
    // Fewer heads than threads: each head's strips split into chunks with their own dk/dv sums.
    const int64_t chunks = std::max<int64_t>(1, (at::get_num_threads() + BH - 1) / BH);
    at::Tensor dk_parts = need_dk ? at::zeros({chunks, BH, Lk, d}, opts) : at::Tensor();
    at::Tensor dv_parts = need_dv ? at::zeros({chunks, BH, Lk, d}, opts) : at::Tensor();
    if (Lq > 0 && Lk > 0) backward_avx2(qs, k3, v3, dout, delta, rows, wide, dq, dk_parts, dv_parts);
    if (need_dk) dk = chunks == 1 ? dk_parts[0] : dk_parts.sum(0);
    if (need_dv) dv = chunks == 1 ? dv_parts[0] : dv_parts.sum(0);
#endif
  } else {
    if (need_dk) dk = at::zeros({BH, Lk, d}, opts);
    if (need_dv) dv = at::zeros({BH, Lk, d}, opts);
    backward_blas(qs, k3, v3, dout, delta, rows, dq, dk, dv);
  }
  if (need_dq) dq.mul_(scale);
  auto unfold = [&](const at::Tensor& t) { return t.defined() ? t.view({B, H, t.size(1), d}) : t; };
  return {unfold(dq), unfold(dk), unfold(dv)};
}

}  // namespace tide::kernels
