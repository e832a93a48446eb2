// Builds without libcurl (TIDE_WITH_CURL=OFF, or curl not found): no request can be made, so every download
// stops with what to do instead; models already on disk (and the Hub cache with HF_HUB_OFFLINE=1) keep
// working. Replaces http_curl.cpp.
#include "tide/hub/http.h"

#include "tide/runtime/build_features.h"
#include "tide/runtime/error.h"

namespace tide {
bool built_with_curl() { return false; }
}  // namespace tide

namespace tide::hub::http {

bool perform(const Request& request, Response&, TransportError&) {
  throw Error("cannot download from " + origin_of(request.url) +
              ": this build of tide cannot download from the Hugging Face Hub (it was built without libcurl); pass a "
              "local model folder or file instead (e.g. one made with `huggingface-cli download`), use a model "
              "already in the Hub cache with HF_HUB_OFFLINE=1, or rebuild tide with libcurl (libcurl4-openssl-dev, "
              "TIDE_WITH_CURL=ON)");
}

}  // namespace tide::hub::http
