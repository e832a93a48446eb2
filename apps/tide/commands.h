// The subcommands of the tide binary; each returns the process exit code.
#pragma once

namespace tide::cli {

int run_generate(int argc, char** argv);
int run_info(int argc, char** argv);
int run_pull(int argc, char** argv);
int run_convert(int argc, char** argv);
int run_quantize(int argc, char** argv);
int run_bench(int argc, char** argv);
int run_train_ti(int argc, char** argv);
int run_make_tiny(int argc, char** argv);
int run_serve(int argc, char** argv);

}  // namespace tide::cli
