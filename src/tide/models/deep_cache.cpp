#include "tide/models/deep_cache.h"

namespace tide::models {
namespace {
thread_local DeepCache* current = nullptr;
}  // namespace

DeepCache* current_deep_cache() { return current; }
DeepCacheScope::DeepCacheScope(DeepCache* cache) : previous_(current) { current = cache; }
DeepCacheScope::~DeepCacheScope() { current = previous_; }

}  // namespace tide::models
