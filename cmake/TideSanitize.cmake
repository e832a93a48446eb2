# The sanitizer build (scripts/fuzz.sh): the parsers, compiled by clang with AddressSanitizer and
# UndefinedBehaviorSanitizer, as libFuzzer targets (tide_libfuzz) and under their unit tests
# (tide_sanitized_tests). Everything else links from a Release build's library (TIDE_RELEASE_CORE): the
# linker takes a file's code from there only when no sanitized file defines it, so this build compiles the
# files that read untrusted bytes, not the whole engine. Configure with clang and -DTIDE_SANITIZE=ON.
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "TIDE_SANITIZE needs clang (libFuzzer): CXX=clang++ cmake -DTIDE_SANITIZE=ON ...")
endif()
if(NOT EXISTS "${TIDE_RELEASE_CORE}")
  message(FATAL_ERROR "TIDE_SANITIZE needs TIDE_RELEASE_CORE, the libtide_core.a of a Release build of this tree")
endif()

# The files that read what users and the network hand tide: model, weight, embedding, LoRA and GGUF files,
# configs, images, prompts, prompt files, credentials.
set(TIDE_SANITIZED_FILES
  io/atomic_file.cpp io/gguf.cpp io/gguf_writer.cpp io/image.cpp io/json_file.cpp io/npy.cpp io/pickle.cpp
  io/safetensors.cpp io/torch_file.cpp io/weights.cpp
  text/a1111_prompt.cpp text/clip_tokenizer.cpp text/clip_unicode.cpp text/embeddings.cpp text/extra_networks.cpp
  adapters/lora_argument.cpp adapters/lora_file.cpp
  models/autoencoder_kl_config.cpp models/unet2d_condition_config.cpp
  pipeline/gguf_checkpoint.cpp pipeline/prompt_batch.cpp pipeline/single_file.cpp
  server/access_control.cpp server/base64.cpp server/infotext.cpp train/image_files.cpp runtime/strings.cpp)
if(TIDE_HAVE_JPEG)
  list(APPEND TIDE_SANITIZED_FILES io/jpeg_libjpeg.cpp)
endif()
list(TRANSFORM TIDE_SANITIZED_FILES PREPEND ${CMAKE_SOURCE_DIR}/src/tide/)
# Their unit tests (the rest of the suite runs in the Release build).
set(TIDE_SANITIZED_TESTS test_safetensors test_torch_file test_gguf test_json_file test_clip_tokenizer
    test_a1111_prompt test_extra_networks test_prompt_batch test_strings test_lora test_single_file
    test_image_limits)
list(TRANSFORM TIDE_SANITIZED_TESTS PREPEND ${CMAKE_SOURCE_DIR}/tests/unit/)
list(TRANSFORM TIDE_SANITIZED_TESTS APPEND .cpp)

# Compile flags: fuzzer-no-link gives libFuzzer its coverage (in the test binary the sanitizer runtime answers
# its callbacks); every target has the same flags, so they share one precompiled header.
set_target_properties(tide_core PROPERTIES EXCLUDE_FROM_ALL ON)  # defined for its usage requirements only

set(TIDE_SANITIZE_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
set(TIDE_SANITIZE_COMPILE_FLAGS ${TIDE_SANITIZE_FLAGS} -fsanitize=fuzzer-no-link)
add_library(tide_release STATIC IMPORTED)
set_target_properties(tide_release PROPERTIES IMPORTED_LOCATION ${TIDE_RELEASE_CORE}
  INTERFACE_INCLUDE_DIRECTORIES "$<TARGET_PROPERTY:tide_core,INTERFACE_INCLUDE_DIRECTORIES>"
  INTERFACE_LINK_LIBRARIES "$<TARGET_PROPERTY:tide_core,INTERFACE_LINK_LIBRARIES>")

add_library(tide_sanitized OBJECT ${TIDE_SANITIZED_FILES})
# The library's usage requirements (include paths, libtorch's definitions and flags), so that every target here
# compiles with the same flags and can share one precompiled header.
target_link_libraries(tide_sanitized PRIVATE tide_release)
target_compile_options(tide_sanitized PRIVATE ${TIDE_SANITIZE_COMPILE_FLAGS})
target_precompile_headers(tide_sanitized PRIVATE ${CMAKE_SOURCE_DIR}/src/tide/pch.h)

add_executable(tide_libfuzz ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_targets.cpp
               ${CMAKE_SOURCE_DIR}/tests/sanitize/libfuzzer_main.cpp $<TARGET_OBJECTS:tide_sanitized>)
target_include_directories(tide_libfuzz PRIVATE ${CMAKE_SOURCE_DIR}/tests/fuzz)
target_compile_options(tide_libfuzz PRIVATE ${TIDE_SANITIZE_COMPILE_FLAGS})
target_link_options(tide_libfuzz PRIVATE ${TIDE_SANITIZE_FLAGS} -fsanitize=fuzzer)
target_link_libraries(tide_libfuzz PRIVATE tide_release)
target_precompile_headers(tide_libfuzz REUSE_FROM tide_sanitized)

find_package(GTest REQUIRED)
add_executable(tide_sanitized_tests ${TIDE_SANITIZED_TESTS} ${CMAKE_SOURCE_DIR}/tests/gtest_main.cpp
               $<TARGET_OBJECTS:tide_sanitized>)
target_include_directories(tide_sanitized_tests PRIVATE ${CMAKE_SOURCE_DIR}/tests)
target_compile_options(tide_sanitized_tests PRIVATE ${TIDE_SANITIZE_COMPILE_FLAGS})
target_link_options(tide_sanitized_tests PRIVATE ${TIDE_SANITIZE_FLAGS})
target_link_libraries(tide_sanitized_tests PRIVATE tide_release GTest::gtest)
target_compile_definitions(tide_sanitized_tests PRIVATE TIDE_TEST_DATA="${CMAKE_SOURCE_DIR}/tests/data"
                                                        $<$<NOT:$<BOOL:${TIDE_HAVE_JPEG}>>:TIDE_WITHOUT_JPEG>)
target_precompile_headers(tide_sanitized_tests REUSE_FROM tide_sanitized)
