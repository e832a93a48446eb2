// tide pull: download a model from the Hugging Face Hub into the HF cache, without generating.
#include <iostream>

#include "args.h"
#include "commands.h"
#include "tide/hub/hub.h"
#include "tide/runtime/error.h"

namespace tide::cli {

int run_pull(int argc, char** argv) {
  Args args("pull", "tide pull ORG/NAME[@REVISION] [--revision R] [--variant fp16]",
            "Downloads what tide needs of a diffusers model on the Hugging Face Hub (configs, tokenizer,\n"
            "safetensors weights) into the Hugging Face cache, shared with diffusers, and prints the\n"
            "snapshot folder. Files already cached are not downloaded again; an interrupted download\n"
            "resumes. Environment: HF_TOKEN (gated or private models), HF_ENDPOINT, HF_HUB_CACHE or\n"
            "HF_HOME (where the cache is), HF_HUB_OFFLINE=1 (only check the cache).");
  args.positional("MODEL", "Hub model id, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5")
      .option("revision", "R", "branch, tag or commit hash", "main")
      .option("variant", "NAME", "weight files of this variant where a component has them, e.g. fp16")
      .option("cache-dir", "DIR", "the Hugging Face cache to use", "$HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub");
  if (!args.parse(argc, argv)) return 0;
  const auto model = args.positional_value("MODEL");
  if (!model) throw Error("tide pull: a model id is required (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5)");
  const auto ref = hub::parse_repo_ref(*model);
  if (!ref) throw Error("tide pull: '" + *model + "' is not a Hugging Face model id (org/name or org/name@revision)");
  if (ref->revision && args.has("revision") && *ref->revision != args.get("revision"))
    throw Error("tide pull: two revisions given (@" + *ref->revision + " and --revision " + args.get("revision") + ")");

  hub::Options options;
  options.revision = ref->revision ? *ref->revision : args.get("revision");
  if (args.has("variant")) options.variant = args.get("variant");
  if (args.has("cache-dir")) options.cache_dir = args.get("cache-dir");
  std::cout << hub::snapshot_download(ref->repo_id, options).string() << "\n";
  return 0;
}

}  // namespace tide::cli
